"""The run: one generation from settings to a file. :mod:`.pipeline` checks and plans a run and
feeds a sink; its settings are :mod:`.settings` (modes and limits in :mod:`.modes`, which imports
nothing so that ``longvid --help`` answers before torch loads); conditioning images and frames in
:mod:`.frames`, up-front input checks in :mod:`.inputs`, mp4 files in :mod:`.video_io`, and the
``longvid`` command line in :mod:`.cli` and :mod:`.cli_inputs`. Nodes, command line and trainer
call in here.

May import every other room: the shared words, networks, weights, sampling and evaluation.
"""
