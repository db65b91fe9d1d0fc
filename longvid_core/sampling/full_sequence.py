"""Full-sequence sampling: ordinary SVD/ExSVD, all frames of one clip at one sigma through the
schedule (PA-VDM Sec. 2.2's reference). The walk is replacement's with one window and no
condition frames (:func:`~.replacement.window_frames`)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..progress import ProgressCallback
from .guidance import DEFAULT_CFG, DEFAULT_MIN_CFG, Denoiser
from .guides import Guide, anchors_of, held_steps, hold_steps
from .keyframes import CondOverTime
from .replacement import window_frames
from .schedules import DEFAULT_STEPS
from .step_rules import EULER, StepRule
from .time_reversal import anchor_in
from .walk import CallProgress, PlanCount, SamplingPlan, Walk, collect_frames, count_new_frames


def plan_full_sequence(num_frames: int, *, steps: int = DEFAULT_STEPS, guides: Sequence[Guide] = (),
                       step_rule: StepRule = EULER) -> SamplingPlan:
    """Cost of :func:`iter_full_sequence`: S calls on all N frames, less the first steps where the
    guides hold every frame (:func:`~.guides.held_steps`), and one more call per step up to a Time
    Reversal Fusion anchor (:mod:`.time_reversal`)."""
    new_frames = count_new_frames(num_frames, 0)
    anchor = anchor_in(anchors_of(guides), 0, num_frames)
    count = PlanCount(step_rule, steps)
    count.window(new_frames, steps - held_steps(hold_steps(guides, steps), range(num_frames)),
                 0 if anchor is None else anchor + 1)
    return count.plan(new_frames, steps)


def iter_full_sequence(
    denoise: Denoiser,
    cond: CondOverTime,
    num_frames: int,
    frame_shape: Sequence[int],
    sigmas: torch.Tensor | None = None,
    *,
    seed: int = 0,
    cfg: float = DEFAULT_CFG,
    min_cfg: float = DEFAULT_MIN_CFG,
    guides: Sequence[Guide] = (),
    callback: ProgressCallback | None = None,
    step_rule: StepRule = EULER,
    dtype: torch.dtype | None = None,
    device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Ordinary SVD/ExSVD sampling: all N frames share one sigma through the S steps, yielded
    together after the last call. N must not exceed the model's clip (25 for SVD-XT, the table for
    ExSVD). Guidance ramp over the N frames exactly as SVD's VideoLinearCFGGuidance.

    ``guides``: :class:`~.guides.Guide` frames the video passes through (strength 1) or is pulled
    toward (below 1), held at every step (:mod:`.guides`); the frames before the last guide that
    carries its picture's cond are also denoised backward from it (:mod:`.time_reversal`): first–last
    frame inbetweening."""
    walk = Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, None, step_rule)
    walk.hold_guides(guides, num_frames)
    walk.reverse_from_anchors = True
    plan = plan_full_sequence(num_frames, steps=walk.steps, guides=guides, step_rule=step_rule)
    walk.progress = CallProgress(callback, plan.denoiser_calls, plan.new_frames)
    return window_frames(walk, num_frames, None, 0, window=num_frames, condition_frames=0,
                          renoise_condition=False, cfg=cfg, min_cfg=min_cfg, clean_sigma=walk.levels[-2])


def sample_full_sequence(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                         sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_full_sequence` collected into ``[B, N, 4, h, w]``."""
    return collect_frames(iter_full_sequence(denoise, cond, num_frames, frame_shape, sigmas, **kwargs), num_frames)


__all__ = ["iter_full_sequence", "plan_full_sequence", "sample_full_sequence"]
