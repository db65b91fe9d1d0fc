"""Autoregressive replacement sampling (PA-VDM Sec. 2.2): one window after another, each
conditioned on the previous window's last frames, held clean (Eq. 5) or re-noised (Eq. 6).

:func:`window_frames` (all noisy frames of a window at one sigma) is also the full-sequence
walk: one window, no condition frames (:mod:`.full_sequence`).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..progress import ProgressCallback
from .guidance import DEFAULT_CFG, DEFAULT_MIN_CFG, Denoiser, linear_cfg_ramp
from .guides import Guide, anchors_of, held_steps, hold_steps
from .schedule_samplers import ScheduleSampler, run_schedule
from .keyframes import CondOverTime
from .schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW
from .step_rules import EULER, StepRule
from .time_reversal import anchor_in
from .walk import CallProgress, PlanCount, SamplingPlan, Walk, collect_frames, count_new_frames

# Replacement baselines at the progressive default's cost per call: 26 frames per window, of which
# one chunk (2 frames) is the condition carried over from the previous window.
DEFAULT_REPLACEMENT_WINDOW = DEFAULT_WINDOW + DEFAULT_CHUNK
DEFAULT_CONDITION_FRAMES = DEFAULT_CHUNK


def plan_replacement(
    num_frames: int,
    *,
    window: int = DEFAULT_REPLACEMENT_WINDOW,
    condition_frames: int = DEFAULT_CONDITION_FRAMES,
    steps: int = DEFAULT_STEPS,
    prefix_frames: int = 0,
    guides: Sequence[Guide] = (),
    step_rule: StepRule = EULER,
) -> SamplingPlan:
    """Cost of :func:`iter_replacement`: S calls per window of ``window`` frames, less the first
    steps of a window whose new frames the guides all hold (:func:`~.guides.held_steps`), and one
    more call per step on a window with a Time Reversal Fusion anchor (:mod:`.time_reversal`).

    The first window has ``min(E, P)`` condition frames from the prefix (none without one) and
    fills the rest with new frames; every later window has E condition frames and ``window - E``
    new frames (fewer in the last one).
    """
    new_frames = count_new_frames(num_frames, prefix_frames)
    _check_replacement_window(window, condition_frames)
    hold, anchors = hold_steps(guides, steps), anchors_of(guides)
    count = PlanCount(step_rule, steps)
    condition_count, next_frame = min(condition_frames, prefix_frames), prefix_frames
    while next_frame < num_frames:
        new_count = min(window - condition_count, num_frames - next_frame)
        anchor = anchor_in(anchors, next_frame, new_count)  # Time Reversal Fusion: the frames up to it again
        count.window(condition_count + new_count, steps - held_steps(hold, range(next_frame, next_frame + new_count)),
                     0 if anchor is None else condition_count + anchor - next_frame + 1)
        next_frame += new_count
        condition_count = condition_frames
    return count.plan(new_frames, steps)


def iter_replacement(
    denoise: Denoiser,
    cond: CondOverTime,
    num_frames: int,
    frame_shape: Sequence[int],
    sigmas: torch.Tensor | None = None,
    *,
    window: int = DEFAULT_REPLACEMENT_WINDOW,
    condition_frames: int = DEFAULT_CONDITION_FRAMES,
    renoise_condition: bool = False,
    seed: int = 0,
    prefix: torch.Tensor | None = None,
    cfg: float = DEFAULT_CFG,
    min_cfg: float = DEFAULT_MIN_CFG,
    clean_sigma: float | None = None,
    guides: Sequence[Guide] = (),
    callback: ProgressCallback | None = None,
    step_rule: StepRule = EULER,
    dtype: torch.dtype | None = None,
    device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Autoregressive replacement sampling (PA-VDM Sec. 2.2), one window at a time.

    Each window of ``window`` frames starts with the last ``condition_frames`` (E) finished frames
    (the prefix's for the first window; without a prefix the first window is plain full-sequence
    sampling), then new noise; the noisy frames share one sigma. The condition frames are held
    clean at ``clean_sigma`` (Eq. 5), or with ``renoise_condition`` re-noised to the current sigma
    every step with fresh noise (Eq. 6; stream ``1 + window_index * S + i``).

    ``guides``: :class:`~.guides.Guide` frames the video passes through (strength 1) or is pulled
    toward (below 1), held at every step (:mod:`.guides`); a window's frames before a guide that
    carries its picture's cond are also denoised backward from it (:mod:`.time_reversal`).
    """
    walk = Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, prefix, step_rule)
    _check_replacement_window(window, condition_frames)
    prefix_tail, prefix_frames = walk.prefix_tail(prefix, condition_frames)
    walk.hold_guides(guides, num_frames, prefix_frames)
    walk.reverse_from_anchors = True
    plan = plan_replacement(num_frames, window=window, condition_frames=condition_frames, steps=walk.steps,
                            prefix_frames=prefix_frames, guides=guides, step_rule=step_rule)
    walk.progress = CallProgress(callback, plan.denoiser_calls, plan.new_frames)
    return window_frames(walk, num_frames, prefix_tail, prefix_frames, window=window,
                          condition_frames=condition_frames, renoise_condition=renoise_condition, cfg=cfg,
                          min_cfg=min_cfg, clean_sigma=walk.clean_level(clean_sigma))


def sample_replacement(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                       sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_replacement` collected into ``[B, N, 4, h, w]`` (prefix included, bit for bit)."""
    frames = iter_replacement(denoise, cond, num_frames, frame_shape, sigmas, **kwargs)
    return collect_frames(frames, num_frames, kwargs.get("prefix"))


def window_frames(walk: "Walk", num_frames, condition, next_frame, *, window, condition_frames,
                   renoise_condition, cfg, min_cfg, clean_sigma):
    """The full-sequence and replacement walk: one window after another, all noisy frames of a
    window at one sigma. ``condition``: clean frames in front, or None."""
    window_index = 0
    while next_frame < num_frames:
        condition_count = 0 if condition is None else condition.shape[1]
        new_count = min(window - condition_count, num_frames - next_frame)
        first_frame = next_frame - condition_count
        x = walk.start_latents(range(next_frame, next_frame + new_count))
        scales = linear_cfg_ramp(condition_count + new_count, min_cfg, cfg).tolist()
        use_cfg = any(s != 1.0 for s in scales[condition_count:])
        if isinstance(walk.step_rule, ScheduleSampler):  # a function that walks the schedule itself
            def model(x_in, x_sigma, condition=condition, first_frame=first_frame, next_frame=next_frame,
                      new_count=new_count, condition_count=condition_count, window_index=window_index,
                      scales=scales, use_cfg=use_cfg):
                sigma = float(x_sigma[0])
                context, context_sigma = condition, [clean_sigma] * condition_count
                if condition is not None and renoise_condition:
                    eps = walk.noise(range(first_frame, next_frame),
                                     stream=1 + window_index * walk.steps + walk.step_index(sigma))
                    context, context_sigma = condition + sigma * eps, [sigma] * condition_count
                return walk.window_model(new_count, first_frame, context, context_sigma,
                                         scales if use_cfg else None)(x_in, x_sigma)

            x = run_schedule(walk, walk.step_rule, x, next_frame, model)
            yield from walk.hand_out((next_frame, x.clone()))
        for i in range(walk.steps if not isinstance(walk.step_rule, ScheduleSampler) else 0):
            sigma, sigma_next = walk.levels[i], walk.levels[i + 1]
            context, context_sigma = condition, [clean_sigma] * condition_count
            if condition is not None and renoise_condition:
                eps = walk.noise(range(first_frame, next_frame), stream=1 + window_index * walk.steps + i)
                context, context_sigma = condition + sigma * eps, [sigma] * condition_count
            x = walk.step(x, [sigma] * new_count, [sigma_next] * new_count, first_frame, context, context_sigma,
                          scales if use_cfg else None)
            del context
            # Hand out a copy: x also seeds the next window's condition frames.
            yield from walk.hand_out((next_frame, x.clone()) if i == walk.steps - 1 else None)
        if condition_frames:
            recent = x if condition is None else torch.cat([condition, x], dim=1)
            condition = recent[:, -condition_frames:]
        next_frame += new_count
        window_index += 1


def _check_replacement_window(window: int, condition_frames: int) -> None:
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be at least 2 frames (condition + new); got {window!r}")
    if not isinstance(condition_frames, int) or not 1 <= condition_frames < window:
        raise ValueError(
            f"condition_frames must be between 1 and window - 1 = {window - 1} so that every window adds new "
            f"frames; got {condition_frames!r}"
        )


__all__ = ["DEFAULT_CONDITION_FRAMES", "DEFAULT_REPLACEMENT_WINDOW", "iter_replacement", "plan_replacement",
           "sample_replacement", "window_frames"]
