"""Guide frames: latents a video must pass through (strength 1) or be pulled toward (below 1).

A guide is a scaled latent ``[B, 4, h, w]`` at a frame index with a strength s in [0, 1]. Its
frame is *held*: whenever the walk sets that frame to a noise level sigma at or above the guide's
hold level, the frame becomes ``guide + sigma * eps`` with eps the frame's own start noise
(:func:`~.walk.frame_noise` stream 0), the point an ODE path through the known clean latent
passes at sigma (latent replacement, RePaint, Lugmayr et al. 2022, with the deterministic noise of
the probability-flow ODE). The hold level is schedule entry ``round(s * S)`` of the S steps:

- s = 1 holds the frame at every level down to sigma 0, so its final latent *is* the guide's,
  in every mode: the frames around it are denoised seeing it at their own level;
- 0 < s < 1 holds it for the first ``round(s * S)`` steps, then lets it go: it starts from the
  guide noised to that level and is denoised from there (SDEdit, Meng et al. 2022);
- s = 0 is no guide.

Holding adds no model call, and a call whose frames are all held at the level it steps them to is
skipped: its prediction would be overwritten. So a refine at strength s (every frame guided) costs
about 1 - s of a full run in the one-level modes, and the plans count exactly the calls made
(:func:`hold_steps`, :func:`all_held`). The noise depends only on (seed, frame), so a held frame's
path does not depend on the window layout.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch

from ..networks.conditioning import SVDCond
from ..problems import Problem
from .noise import frame_noise


HOLD, CLEAN, TIME_REVERSAL, AUTO = "hold", "clean", "time_reversal", "auto"
GUIDE_METHODS = (AUTO, HOLD, CLEAN, TIME_REVERSAL)
# What auto runs, by the kind of walk: progressive windows (many levels per call), full sequence and
# replacement windows (one level per call), context windows (not measured: hold). bench_guides.py,
# 8 held-out scenes x 240 frames, keys every 48: clean beat hold and time reversal on both small
# models (decoded keys 35.3 / 31.3 dB against 25.1 / 27.2 held and 28.2 time reversal; seams 1.5 /
# 2.3 against 6.5 / 3.8 and 3.3), and interpolation x4 (29.6 / 23.6 dB against 14.2 / 18.6 held).
AUTO_METHOD = {"progressive": CLEAN, "one_level": CLEAN, "context_windows": HOLD}


@dataclass(frozen=True)
class Guide:
    """``latent`` (scaled, ``[B, 4, h, w]``) at video frame ``frame`` with ``strength`` in [0, 1].
    ``method`` (how a strength-1 guide steers the frames around it, :data:`GUIDE_METHODS`):

    - ``hold``: the model sees the frame at the step's level, ``guide + sigma * eps`` (RePaint);
    - ``clean``: the model sees the frame's clean latent at the smallest sigma, as a context frame,
      so the frames around it see the picture from the moment it enters their window;
    - ``time_reversal``: held, and in the modes whose calls hold one level (full sequence,
      replacement) the frames before it are also denoised backward from its picture, which needs
      ``cond``, the picture's own :class:`SVDCond` (:mod:`.time_reversal`); held only elsewhere;
    - ``auto``: per walk, :data:`AUTO_METHOD` (what ``bench/bench_guides.py`` measured better:
      ``clean`` in progressive, full-sequence and replacement windows, ``hold`` in context windows).

    Below strength 1 every method holds the frame for its share of the steps (SDEdit)."""

    frame: int
    latent: torch.Tensor
    strength: float = 1.0
    cond: SVDCond | None = None
    method: str = HOLD


def guides_problem(guides: Sequence[Guide], num_frames: int, prefix_frames: int = 0,
                   frame_shape: Sequence[int] | None = None) -> Problem | None:
    """What is wrong with ``guides`` for a video of ``num_frames`` frames (prefix included), or None:
    an index outside the new frames, two guides at one index, a strength outside [0, 1], a latent
    of another shape."""
    seen = set()
    for guide in guides:
        try:
            frame = operator.index(guide.frame)
        except TypeError:
            return Problem("guide frame", "a whole frame index", repr(guide.frame))
        if not prefix_frames <= frame < num_frames:
            where = f"the new frames {prefix_frames}..{num_frames - 1}" + (
                f" (frames 0..{prefix_frames - 1} are the given prefix)" if prefix_frames else "")
            return Problem("guide frame", f"an index within {where}", frame,
                           "lower it or generate more frames" if frame >= num_frames else "guide a later frame")
        if frame in seen:
            return Problem("guide frame", "one guide per frame", f"two guides at frame {frame}")
        seen.add(frame)
        strength = guide.strength
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            return Problem("guide strength", "a number from 0 to 1 (1: the video passes through the picture)",
                           f"{strength!r} at frame {frame}")
        latent = guide.latent
        if not isinstance(latent, torch.Tensor) or latent.dim() != 4:
            found = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            return Problem("guide latent", "a scaled latent [B, 4, h, w]", f"{found} at frame {frame}")
        if frame_shape is not None and tuple(latent.shape) != tuple(frame_shape):
            return Problem("guide latent", f"the video's latent shape {tuple(frame_shape)} (a picture of the "
                           "video's size, fitted like the conditioning image)",
                           f"{tuple(latent.shape)} at frame {frame}")
        if not bool(torch.isfinite(latent).all()):
            return Problem("guide latent", "finite values", f"NaN/Inf at frame {frame}")
        if guide.method not in GUIDE_METHODS:
            return Problem("guide method", f"one of {', '.join(GUIDE_METHODS)}", f"{guide.method!r} at frame {frame}")
        if guide.cond is not None and (not isinstance(guide.cond, SVDCond) or guide.cond.per_frame
                                       or guide.cond.batch_size != latent.shape[0]):
            return Problem("guide cond", f"one SVDCond of the picture, batch {latent.shape[0]}",
                           f"{type(guide.cond).__name__} at frame {frame}")
    return None


def hold_steps(guides: Sequence[Guide], steps: int) -> dict[int, int]:
    """Per guided frame, the last schedule index it is held at: ``round(s * S)`` of the S steps
    (0: held only at its start). Frames without a guide (or at strength 0) are not in it."""
    return {int(g.frame): round(float(g.strength) * steps) for g in guides if g.strength > 0}


def all_held(hold: Mapping[int, int], frame_targets: Iterable[tuple[int, int]]) -> bool:
    """True when every ``(frame, schedule index it is stepped to)`` lands on a held level, so the
    call that would step them can be skipped (the guides overwrite its result)."""
    return all(hold.get(frame, -1) >= target for frame, target in frame_targets)


def resolved_method(guide: Guide, walk_kind: str) -> str:
    """The method a strength-1 guide runs with in a walk of ``walk_kind`` (``auto`` made concrete)."""
    return AUTO_METHOD[walk_kind] if guide.method == AUTO else guide.method


def anchors_of(guides: Sequence[Guide], walk_kind: str = "one_level") -> dict[int, SVDCond]:
    """The guides Time Reversal Fusion runs backward from: strength 1, time_reversal (or auto
    resolved to it), with their picture's cond."""
    return {int(g.frame): g.cond for g in guides if g.strength == 1 and g.cond is not None
            and resolved_method(g, walk_kind) == TIME_REVERSAL}


def held_steps(hold: Mapping[int, int], frames: Iterable[int]) -> int:
    """How many first steps of a walk that steps ``frames`` together (one level for all) need no
    call: as many as the least-held of them is held for."""
    if not hold:
        return 0
    return min((hold.get(frame, 0) for frame in frames), default=0)


class HeldFrames:
    """The guides of one run, ready for the walk: per frame, the latent and the lowest sigma at
    which the frame is still held. Latents move to the walk's device only while a step uses them."""

    def __init__(self, guides: Sequence[Guide], levels: Sequence[float], seed: int, frame_shape,
                 walk_kind: str = "one_level"):
        self.seed = seed
        self.frame_shape = tuple(frame_shape)
        self.anchors = anchors_of(guides, walk_kind)  # frame -> the picture's cond (time_reversal.py)
        self.clean = {int(g.frame): g.latent for g in guides
                      if g.strength == 1 and resolved_method(g, walk_kind) == CLEAN}  # shown clean
        latents = {int(g.frame): g.latent for g in guides}
        # frame -> (latent, lowest sigma at which it is held)
        self.hold = {frame: (latents[frame], levels[last]) for frame, last in hold_steps(guides, len(levels) - 1).items()}

    def holds_all(self, first_frame: int, count: int, sigma_next) -> bool:
        """True when frames ``first_frame ..`` (``count`` of them) are all held at ``sigma_next``
        (one value or one per frame): a step to there needs no model call."""
        return count > 0 and len(self.held_frames(first_frame, count, sigma_next)) == count

    def shown(self, x: torch.Tensor, sigma: torch.Tensor, frames: list[int], clean_sigma: float):
        """What the model is shown: ``x`` ``[B, n, ...]`` and ``sigma`` ``[B, n]`` (video frames
        ``frames``, in the call's order) with every ``clean`` guide's frame replaced by its latent
        at ``clean_sigma``. The inputs themselves are not changed."""
        if not self.clean:
            return x, sigma
        out_x, out_sigma = x, sigma
        for position, frame in enumerate(frames):
            latent = self.clean.get(frame)
            if latent is None:
                continue
            if out_x is x:
                out_x, out_sigma = x.clone(), sigma.clone()
            out_x[:, position] = latent.to(device=x.device, dtype=x.dtype)
            out_sigma[:, position] = clean_sigma
        return out_x, out_sigma

    def targets(self, x0: torch.Tensor, first_frame: int, sigma: float) -> torch.Tensor:
        """``x0`` (predictions for frames ``first_frame ..`` at one ``sigma``) with every frame held
        at ``sigma`` predicting its guide: from ``guide + sigma * eps`` that x0 keeps it on its path."""
        out = x0
        for position, latent in self._held(first_frame, _per_frame(sigma, x0.shape[1])):
            if out is x0:
                out = x0.clone()
            out[:, position] = latent.to(device=x0.device, dtype=x0.dtype)
        return out

    def apply(self, x: torch.Tensor, first_frame: int, sigma) -> torch.Tensor:
        """``x`` (video frames ``first_frame ..``) with every held frame set to its guide at its own
        sigma; ``sigma`` is one value or one per frame of ``x``. ``x`` itself is not changed."""
        if not self.hold:
            return x
        sigmas = _per_frame(sigma, x.shape[1])
        out = x
        for position, latent in self._held(first_frame, sigmas):
            if out is x:
                out = x.clone()
            eps = frame_noise(self.seed, first_frame + position, self.frame_shape, dtype=x.dtype, device=x.device)
            out[:, position] = latent.to(device=x.device, dtype=x.dtype) + sigmas[position] * eps
        return out

    def held_frames(self, first_frame: int, count: int, sigma) -> list[int]:
        """The video frames among ``first_frame ..`` (``count`` of them) held at ``sigma`` (one value
        or one per frame)."""
        if not self.hold:
            return []
        return [first_frame + position for position, _ in self._held(first_frame, _per_frame(sigma, count))]

    def _held(self, first_frame: int, sigmas: list[float]):
        """``(position, guide latent)`` of every frame from ``first_frame`` held at its sigma."""
        for position, sigma in enumerate(sigmas):
            held = self.hold.get(first_frame + position)
            if held is not None and sigma >= held[1]:
                yield position, held[0]


def _per_frame(sigma, count: int) -> list[float]:
    if isinstance(sigma, (list, tuple, torch.Tensor)):
        return [float(s) for s in sigma]
    return [float(sigma)] * count


__all__ = ["AUTO_METHOD", "GUIDE_METHODS", "Guide", "HeldFrames", "all_held", "anchors_of", "guides_problem",
           "held_steps", "hold_steps", "resolved_method"]
