"""Evaluation: synthetic shape scenes (the demo's pictures and the quality benchmark's ground
truth), video metrics over them, tiny random models for tests, and the schedule picture.

May import: the shared words, ``longvid_core.networks`` and ``longvid_core.sampling``. Never
weights on disk or the run.
"""
