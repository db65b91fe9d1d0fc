"""The window walk every sampling method shares, and the conventions they all keep.

Every sampler is a pure function over ``denoise(x[B,F,4,h,w], sigma[B,F], cond) -> x0`` (the
k-diffusion contract with a noise level per frame; ``cond`` an :class:`SVDCond` of batch B). A
method (one file each: :mod:`.progressive`, :mod:`.replacement`, :mod:`.full_sequence`,
:mod:`.context_windows`) decides which frames one call holds at which sigma; :class:`Walk` does
the rest of a call (conditioning over time, guidance, the step rule, progress and cancel), so a
new method is a new generator over a :class:`Walk` and a new step rule a function in
:mod:`.step_rules`; neither edits this file.

Shared conventions:

- ``iter_*`` yield finished ``(frame_index, latent[B,4,h,w])`` and hold nothing that grows with
  the video; ``sample_*`` collect them into ``[B, N, 4, h, w]`` (:func:`collect_frames`);
  ``plan_*`` give the exact call count before starting. ``callback`` gets a
  :class:`~longvid_core.progress.Progress` after every call; returning ``False`` raises
  :class:`~longvid_core.progress.Cancelled` after the frames that call finished have been yielded.
- ``num_frames`` counts a given ``prefix`` (frames ``0..P-1``); only frames ``P..N-1`` are new.
- Start noise of frame k is ``sigmas[0] * frame_noise(seed, k)`` whatever the sampler or window.
- Guidance per frame (:func:`~.guidance.guided_denoise`), on SVD's ``VideoLinearCFGGuidance`` ramp
  (:func:`~.guidance.linear_cfg_ramp`): ``min_cfg`` at the window front, ``cfg`` at the back.
- Clean frames that sit in a window only as context go in at ``clean_sigma`` (default the
  schedule's smallest positive sigma: the model takes ln(sigma)); their predictions are discarded.
- ``cond`` is one :class:`SVDCond`, or keyframes (:mod:`.keyframes`).
- ``guides`` hold given frames at every level the walk sets them to (:mod:`.guides`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from ..problems import raise_problem
from ..progress import SAMPLING, Cancelled, Progress, report
from ..shapes import check_latents
from . import time_reversal
from .guidance import guided_denoise
from .guides import Guide, HeldFrames, guides_problem
from .keyframes import KeyframeConds
from .noise import frame_noise
from .schedules import DEFAULT_STEPS, check_sigmas, get_sigmas_karras
from .step_rules import StepFrames, StepRule


# Noise a step rule draws (ancestral, LCM) for schedule index s is stream STEP_NOISE_STREAM - s of
# frame_noise: apart from the start noise (0), replacement's re-noising (positive) and progressive
# context noise (-1 - call).
STEP_NOISE_STREAM = -(1 << 40)


@dataclass(frozen=True)
class SamplingPlan:
    """Cost of a sampling run, known before it starts.

    ``denoiser_calls``: calls of ``denoise`` (a guided call is one batched call).
    ``frame_evaluations``: latent frames passed to the model summed over calls, per batch item and
    not doubled by guidance. ``new_frames``: frames generated (prefix excluded).
    """

    denoiser_calls: int
    frame_evaluations: int
    new_frames: int
    steps: int

    @property
    def evaluations_per_frame(self) -> float:
        return self.frame_evaluations / self.new_frames


class PlanCount:
    """A plan's calls and frame evaluations, counted step by step as the walk will make them: a
    step is ``rule.calls(to_zero)`` calls on its frames (and as many on ``backward_frames`` for Time
    Reversal Fusion)."""

    def __init__(self, rule: StepRule, steps: int):
        self.rule = rule
        self.schedule_steps = steps
        self.calls = 0
        self.evaluations = 0

    def steps(self, frames: int, times: int = 1, to_zero: bool = False, backward_frames: int = 0) -> None:
        calls = self.rule.calls(to_zero) * times
        self.calls += calls * (2 if backward_frames else 1)
        self.evaluations += calls * (frames + backward_frames)

    def window(self, frames: int, called: int, backward_frames: int = 0) -> None:
        """``called`` steps of one window at one level, the last of them to sigma 0 (every step for a
        sampler function that runs the whole schedule itself)."""
        if getattr(self.rule, "whole_schedule", False):
            called = self.schedule_steps
        if called:
            self.steps(frames, called - 1, backward_frames=backward_frames)
            self.steps(frames, 1, to_zero=True, backward_frames=backward_frames)

    def plan(self, new_frames: int, steps: int) -> SamplingPlan:
        return SamplingPlan(self.calls, self.evaluations, new_frames, steps)


def collect_frames(
    frames: Iterable[tuple[int, torch.Tensor]], num_frames: int, prefix: torch.Tensor | None = None
) -> torch.Tensor:
    """Collect a sampler's ``(frame_index, latent[B,4,h,w])`` stream into ``[B, N, 4, h, w]``.

    With a ``prefix`` ``[B, P, 4, h, w]`` its frames are copied unchanged into ``0..P-1``; the
    stream must then deliver exactly frames ``P..N-1``.
    """
    prefix_frames = 0 if prefix is None else prefix.shape[1]
    out = None
    expected = prefix_frames
    for index, latent in frames:
        if index != expected:
            raise ValueError(f"expected frame {expected} next from the sampler; got frame {index}")
        if out is None:
            out = latent.new_empty((latent.shape[0], num_frames, *latent.shape[1:]))
            if prefix is not None:
                out[:, :prefix_frames] = prefix.to(device=out.device, dtype=out.dtype)
        out[:, index] = latent
        expected += 1
    if expected != num_frames:
        raise ValueError(f"the sampler delivered frames up to {expected - 1}; expected up to {num_frames - 1}")
    return out


class CallProgress:
    """Counts calls and finished frames, informs the callback, remembers a cancel request."""

    def __init__(self, callback, calls_total: int, frames_total: int):
        self.callback = callback
        self.calls_total = calls_total
        self.frames_total = frames_total
        self.calls_done = 0
        self.frames_done = 0

    def report(self, finished: tuple[int, torch.Tensor] | None, calls: int = 1) -> bool:
        """Account for ``calls`` denoiser calls (0 for a step the guides made without one) and the
        frames ``(first_index, [B, n, ...])`` they finished; True when the callback asks to stop."""
        self.calls_done += calls
        newest_index = newest = None
        if finished is not None:
            first_index, frames = finished
            self.frames_done += frames.shape[1]
            newest_index, newest = first_index + frames.shape[1] - 1, frames[:, -1]
        return report(self.callback, Progress(SAMPLING, self.calls_done, self.calls_total, self.frames_done,
                                              self.frames_total, newest_index, newest))

    def cancelled(self) -> Cancelled:
        return Cancelled(SAMPLING, self.calls_done, self.frames_done)


class Walk:
    """What every window walk shares: the denoiser, the conditioning over time, the schedule, the
    frame noise, the step rule and the progress count."""

    def __init__(self, denoise, conds, sigmas, frame_shape, seed, dtype, device, step_rule):
        self.denoise = denoise
        self.conds = conds
        self.sigmas = sigmas
        self.levels = sigmas.tolist()  # python floats: the exact schedule entries
        self.steps = len(self.levels) - 1
        self.frame_shape = frame_shape
        self.seed = seed
        self.dtype = dtype
        self.device = device
        self.step_rule = step_rule
        self.progress: CallProgress | None = None
        self.held = HeldFrames((), self.levels, seed, frame_shape)  # guide frames (guides.py)
        self.reverse_from_anchors = False  # Time Reversal Fusion at guide anchors (time_reversal.py)
        self.memory: dict[int, dict] = {}  # frame -> what the step rule keeps between its steps
        self.level_index = {value: i for i, value in enumerate(self.levels)}
        self._unreported = False  # a call made but not yet reported

    @classmethod
    def start(cls, denoise, cond, frame_shape, sigmas, seed, dtype, device, prefix, step_rule) -> "Walk":
        """Check the common arguments (before any call) and set up the walk."""
        sigmas = _prepare_sigmas(sigmas, device)
        check_sigmas(sigmas)
        frame_shape = _check_frame_shape(frame_shape)
        if dtype is None:
            dtype = prefix.dtype if prefix is not None else torch.float32
        if device is None:
            device = prefix.device if prefix is not None else torch.device("cpu")
        return cls(denoise, KeyframeConds(cond), sigmas, frame_shape, seed, dtype, torch.device(device), step_rule)

    def hold_guides(self, guides: Sequence[Guide], num_frames: int, prefix_frames: int = 0,
                    walk_kind: str = "one_level") -> None:
        """Check ``guides`` for this video (before any call) and hold their frames from now on."""
        guides = list(guides or ())
        raise_problem(guides_problem(guides, num_frames, prefix_frames, self.frame_shape))
        self.held = HeldFrames(guides, self.levels, self.seed, self.frame_shape, walk_kind)

    def start_latents(self, frames: range) -> torch.Tensor:
        """The frames' start: ``sigmas[0] * frame_noise``, guide frames held, ``[B, n, 4, h, w]``."""
        return self.held.apply(self.levels[0] * self.noise(frames), frames.start, self.levels[0])

    def noise(self, frames: range, stream: int = 0) -> torch.Tensor:
        """``frame_noise`` of the given frames, ``[B, n, 4, h, w]``."""
        batch, rest = self.frame_shape[0], self.frame_shape[1:]
        if not len(frames):
            return torch.empty((batch, 0, *rest), dtype=self.dtype, device=self.device)
        return torch.stack([frame_noise(self.seed, k, self.frame_shape, stream=stream, dtype=self.dtype,
                                        device=self.device) for k in frames], dim=1)

    def step(self, noisy, sigma: list[float], sigma_next: list[float], first_frame: int, context=None,
             context_sigma: Sequence[float] = (), scales: list[float] | None = None) -> torch.Tensor:
        """Move ``noisy`` (video frames from ``first_frame + len(context)``) one step, ``sigma`` ->
        ``sigma_next`` per frame, by the step rule, guide frames held. The model also sees
        ``context`` in front at ``context_sigma``; its predictions are discarded. ``scales``:
        guidance per window frame. No call when every frame is held at ``sigma_next``."""
        count = 0 if context is None else context.shape[1]
        if self.held.holds_all(first_frame + count, noisy.shape[1], sigma_next):
            return self.hold(noisy, first_frame + count, sigma_next)  # the guides overwrite any step
        model = self.window_model(noisy.shape[1], first_frame, context, context_sigma, scales)
        stepped = self.step_rule.step(model, noisy, self._values(sigma), self._values(sigma_next),
                                      self.step_frames(first_frame + count, sigma))
        return self.hold(stepped, first_frame + count, sigma_next)

    def hold(self, x: torch.Tensor, first_frame: int, sigma) -> torch.Tensor:
        """``x`` (video frames from ``first_frame`` at ``sigma``) with the guides' held frames set, and
        the step rule's memory of those frames dropped: a frame the guide put somewhere is not where a
        multistep rule's history (or UniPC's pending correction) left it, so when its guide lets it go
        (strength below 1) it starts afresh there, as core's sampler started at that sigma would."""
        for frame in self.held.held_frames(first_frame, x.shape[1], sigma):
            self.memory.pop(frame, None)
        return self.held.apply(x, first_frame, sigma)

    def window_model(self, noisy_count: int, first_frame: int, context=None, context_sigma: Sequence[float] = (),
                     scales: list[float] | None = None):
        """``model(x, x_sigma) -> x0`` for ``noisy_count`` noisy frames at per-frame ``x_sigma``, the
        model also seeing ``context`` in front (video frames from ``first_frame``), with guidance
        ``scales`` per window frame and Time Reversal Fusion at an anchor among the noisy frames."""
        count = 0 if context is None else context.shape[1]
        cond = self.conds.for_frames(first_frame, count + noisy_count)
        cfg_scales = None if scales is None else torch.tensor(scales, dtype=torch.float64)
        front = self._values(context_sigma)
        batch = self.frame_shape[0]

        anchor = (time_reversal.anchor_in(self.held.anchors, first_frame + count, noisy_count)
                  if self.reverse_from_anchors else None)

        def model(x: torch.Tensor, x_sigma: torch.Tensor) -> torch.Tensor:
            window = x if context is None else torch.cat([context, x], dim=1)
            frame_sigma = torch.cat([front, x_sigma]).expand(batch, -1).contiguous()
            x0 = self.call(window, frame_sigma, cond, cfg_scales, first_frame)
            if anchor is not None:  # the window up to the anchor, reversed, from the anchor's picture
                lead = anchor - first_frame + 1
                backward = self.call(window[:, :lead].flip(1), frame_sigma[:, :lead].flip(1).contiguous(),
                                     self.held.anchors[anchor], None if cfg_scales is None else cfg_scales[:lead],
                                     first_frame, reversed_frames=True)
                x0 = time_reversal.fuse(x0, backward.flip(1))
            return x0[:, count:]

        return model

    def step_index(self, sigma: float) -> int:
        """The schedule step a sigma belongs to: its index, or for a sigma between two levels (a
        two-stage sampler's midpoint) the step that starts above it."""
        index = self.level_index.get(float(sigma))
        if index is not None:
            return index
        return max(i for i, level in enumerate(self.levels[:-1]) if level >= sigma)

    def step_frames(self, first_frame: int, sigma: Sequence[float], device=None) -> StepFrames:
        """What the step rule may know of frames ``first_frame ..`` at ``sigma`` (one per frame):
        their memory, their noise for this step, a function of (seed, frame, schedule index), and the
        steps each has left."""
        def noise() -> torch.Tensor:
            return torch.stack([frame_noise(self.seed, first_frame + i, self.frame_shape,
                                            stream=STEP_NOISE_STREAM - self.level_index[float(value)],
                                            dtype=self.dtype, device=device or self.device)
                                for i, value in enumerate(sigma)], dim=1)

        steps_left = [self.steps - self.level_index[float(value)] for value in sigma]
        return StepFrames(first_frame, len(sigma), self.memory, noise, steps_left)

    def call(self, x, sigma, cond, cfg_scales, first_frame: int, reversed_frames: bool = False):
        """One (guided) denoiser call on the video frames from ``first_frame``. The call before it
        is reported first, so a cancel asked for there stops before this one; the last call of a
        step is reported by :meth:`hand_out`. A denoiser with a ``window`` method (a caching one,
        :mod:`longvid_core.sampling.step_cache`) is told which frames the call holds, and whether
        they are in reversed order."""
        if self._unreported:
            self._unreported = False
            if self.progress.report(None):
                raise self.progress.cancelled()
        if hasattr(self.denoise, "window"):
            self.denoise.window(first_frame, x.shape[1], reversed_frames=reversed_frames)
        frames = list(range(first_frame, first_frame + x.shape[1]))
        x, sigma = self.held.shown(x, sigma, frames[::-1] if reversed_frames else frames, self.levels[-2])
        out = guided_denoise(self.denoise, x, sigma, cond, cfg_scales)
        self._unreported = True
        return out

    def hand_out(self, finished: tuple[int, torch.Tensor] | None):
        """After a step: report its last call (if it made one), yield the frames it finished, then
        stop if asked to."""
        called, self._unreported = self._unreported, False
        if not called and finished is None:
            return
        cancelled = self.progress.report(finished, calls=int(called))
        if finished is not None:
            first_index, frames = finished
            for i in range(frames.shape[1]):
                self.memory.pop(first_index + i, None)
                yield first_index + i, frames[:, i]
        if cancelled:
            raise self.progress.cancelled()

    def clean_level(self, clean_sigma: float | None) -> float:
        """The sigma clean context frames go in at: ``clean_sigma``, or the smallest positive one."""
        return self.sigmas[-2].item() if clean_sigma is None else positive_sigma("clean_sigma", clean_sigma)

    def prefix_tail(self, prefix, keep: int):
        """The last ``keep`` prefix frames (a copy: the caller's tensor is never touched) and P."""
        if prefix is None:
            return None, 0
        batch, frames = check_latents(prefix, "prefix")
        frame_shape = self.frame_shape
        if (batch, *prefix.shape[2:]) != tuple(frame_shape):
            raise ValueError(
                f"prefix: expected frames of shape {tuple(frame_shape)} (frame_shape), i.e. "
                f"[{frame_shape[0]}, P, {', '.join(map(str, frame_shape[1:]))}]; found {list(prefix.shape)}"
            )
        if frames == 0:
            return None, 0
        return prefix[:, -keep:].to(device=self.device, dtype=self.dtype, copy=True), frames

    def _values(self, values: Sequence[float]) -> torch.Tensor:
        # built from sigmas.tolist() values, so the model sees exactly the schedule's entries
        return torch.tensor(list(values), dtype=self.sigmas.dtype, device=self.sigmas.device)


def _prepare_sigmas(sigmas, device) -> torch.Tensor:
    if sigmas is None:
        sigmas = get_sigmas_karras(DEFAULT_STEPS)
    return sigmas.to(device) if device is not None and isinstance(sigmas, torch.Tensor) else sigmas


def positive_sigma(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0 (the model takes ln(sigma)); got {value}")
    return float(value)


def _check_frame_shape(frame_shape) -> tuple[int, ...]:
    shape = tuple(frame_shape) if isinstance(frame_shape, (tuple, list, torch.Size)) else None
    if shape is None or len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"frame_shape: expected (batch, channels, height, width) of one latent frame, e.g. (1, 4, 72, 128); "
            f"got {frame_shape!r}"
        )
    return shape


def count_new_frames(num_frames, prefix_frames: int) -> int:
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a whole number >= 1; got {num_frames!r}")
    if num_frames <= prefix_frames:
        raise ValueError(
            f"num_frames ({num_frames}) is the length of the whole output video including the {prefix_frames} "
            f"prefix frames; it must exceed {prefix_frames} to generate anything"
        )
    return num_frames - prefix_frames


__all__ = ["CallProgress", "PlanCount", "SamplingPlan", "Walk", "collect_frames", "count_new_frames", "frame_noise",
           "positive_sigma"]
