"""Weights on disk: loading SVD (SGM single file or diffusers folder) into the networks, one key
map per file format (``keymaps/``), reading and atomic writing of checkpoints, the ExVideo and LoRA
file layouts, the base identity a file records, and the ``trained_for`` metadata.

May import: the shared words and ``longvid_core.networks``. Never sampling, evaluation or the run.
"""
