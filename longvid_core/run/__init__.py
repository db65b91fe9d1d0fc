"""The run: one generation from settings to a file. :mod:`.pipeline` checks and plans a run
(settings in :mod:`.settings`) and feeds a sink (:mod:`.sinks`); conditioning images and frames in
:mod:`.frames`, up-front input checks in :mod:`.inputs`, mp4 files in :mod:`.video_io`, and the
``longvid`` command line in :mod:`.cli`. Nodes, command line and trainer call in here.

May import every other room: the shared words, networks, weights, sampling and evaluation.
"""
