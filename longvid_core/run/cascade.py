"""LaVie's later stages (Wang et al. 2023: base clip, then temporal interpolation, then a refining
super-resolution pass) in SVD's terms, as guide frames (:mod:`longvid_core.sampling.guides`):

- **interpolation**: every ``factor``-th output frame is a frame of the input video at strength 1,
  so every input frame is kept exactly and the model makes the ``factor - 1`` frames between; SVD's
  fps conditioning is set to the output rate;
- **refine**: every frame of the input video at strength s < 1: each frame starts from its input
  noised to level ``round(s * S)`` and is denoised with its neighbours in view (SDEdit, Meng et al.
  2022); with the input fitted to a larger size first it is a hires pass for video.

The input video is held in memory as pictures and latents (a video to refine or interpolate, not
an hour of footage).
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING

import torch

from ..problems import Problem
from .pipeline import guides_from_images

if TYPE_CHECKING:
    from ..networks.conditioning import SVDCond
    from ..networks.model import SVDModel
    from ..sampling.guides import Guide


def interpolated_frames(input_frames: int, factor: int) -> int:
    """Frames of an input of ``input_frames`` frames interpolated ``factor`` times: the input's
    frames at 0, factor, 2 * factor, ... and ``factor - 1`` new frames between each two."""
    return (input_frames - 1) * factor + 1


def cascade_problem(input_frames: int, factor=None, strength=None) -> Problem | None:
    """What is wrong with an interpolation ``factor`` or a refine ``strength`` for an input video of
    ``input_frames`` frames, or None."""
    if input_frames < 2:
        return Problem("input video", "a video of at least 2 frames", f"{input_frames} frame(s)")
    if factor is not None:
        try:
            whole = operator.index(factor)
        except TypeError:
            whole = None
        if isinstance(factor, bool) or whole is None or whole < 2:
            return Problem("factor", "a whole number >= 2 (2: one new frame between each two)", repr(factor))
    if strength is not None and (isinstance(strength, bool) or not isinstance(strength, (int, float))
                                 or not 0.0 <= strength <= 1.0):
        return Problem("strength", "a number from 0 to 1 (how close each frame stays to the input)", repr(strength))
    return None


def _one_note(notes: list[str], video: torch.Tensor, width: int, height: int) -> list[str]:
    # every frame of one video has the same shape: say it once
    h, w = video.shape[1:3]
    return [f"the input video's {video.shape[0]} frames ({w}x{h}) were fitted to {width}x{height} as the "
            "conditioning image is: centre-cropped to the aspect ratio, then resized"] if notes else []


def interpolation_guides(model: SVDModel, video: torch.Tensor, factor: int, width: int, height: int,
                         method: str = "hold", anchors_like: SVDCond | None = None) -> tuple[list[Guide], list[str]]:
    """Frames ``[N, H, W, 3]`` (0..1) -> strength-1 guides at 0, factor, 2 * factor, ... (fitted to
    ``width x height`` like conditioning images), and a note if they were cropped.
    ``method`` and ``anchors_like`` (the run's cond): as :func:`~.pipeline.guides_from_images`'s."""
    starts = [i * factor for i in range(video.shape[0])]
    guides, notes = guides_from_images(model, video, starts, [1.0] * len(starts), width, height,
                                       method=method, anchors_like=anchors_like)
    return guides, _one_note(notes, video, width, height)


def refine_guides(model: SVDModel, video: torch.Tensor, strength: float, width: int,
                  height: int) -> tuple[list[Guide], list[str]]:
    """Frames ``[N, H, W, 3]`` (0..1) -> a guide of ``strength`` at every frame (fitted to
    ``width x height``, which may be larger than the input: a hires pass), and a note if cropped."""
    count = video.shape[0]
    guides, notes = guides_from_images(model, video, list(range(count)), [float(strength)] * count, width, height)
    return guides, _one_note(notes, video, width, height)


__all__ = ["cascade_problem", "interpolated_frames", "interpolation_guides", "refine_guides"]
