"""Progressive autoregressive sampling (PA-VDM, Xie et al., Algorithm 1, Sec. 3.1-3.4).

The window holds F noisy frames in chunks of C at rising noise levels, row by row of
:func:`~.schedules.progressive_table`: each call steps every chunk one level down, a chunk that
reaches sigma 0 leaves at the front (and stays there as clean context, Sec. 3.4), new noise enters
at the back. Initialisation and termination stages (Sec. 3.2) are rows of the same table. Video
length is unbounded at constant memory. Partitions and lookahead (FIFO-Diffusion, Kim et al. 2024,
Sec. 4) split a row's calls for weights trained with one noise level per clip.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..progress import ProgressCallback
from .guidance import DEFAULT_CFG, DEFAULT_MIN_CFG, Denoiser, linear_cfg_ramp
from .guides import Guide, all_held, hold_steps
from .keyframes import CondOverTime
from .schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW, progressive_table, validate_window
from .step_rules import EULER, StepRule
from .walk import CallProgress, PlanCount, SamplingPlan, Walk, collect_frames, count_new_frames, positive_sigma


def plan_progressive(
    num_frames: int,
    *,
    window: int = DEFAULT_WINDOW,
    chunk: int = DEFAULT_CHUNK,
    steps: int = DEFAULT_STEPS,
    prefix_frames: int = 0,
    partitions: int = 1,
    lookahead: bool = False,
    guides: Sequence[Guide] = (),
    step_rule: StepRule = EULER,
) -> SamplingPlan:
    """Cost of :func:`iter_progressive` for an N-frame video (including ``prefix_frames``), counted
    over the same calls the sampler makes (:func:`_row_calls`), less those whose frames the guides
    all hold (:func:`~.guides.all_held`). Unpartitioned and unguided: ``(M + K - 1) * d`` calls
    for M = ceil(new/C) chunks, K = F/C, d = S*C/F."""
    new_frames = count_new_frames(num_frames, prefix_frames)
    table = progressive_table(window, chunk, steps, new_frames, clean_start=prefix_frames > 0)
    _check_partitions(table, partitions)
    hold = hold_steps(guides, steps)
    front = min(chunk, prefix_frames)  # the clean chunk in front before the first one is emitted
    count = PlanCount(step_rule, steps)
    for row in table:
        clean = front if row.clean_chunk and row.first_chunk == 0 else chunk if row.clean_chunk else 0
        target = dict(zip(row.chunks, row.levels))
        for i, (group, ahead) in enumerate(_row_calls(table, row, partitions, lookahead)):
            if hold and all_held(hold, ((prefix_frames + f, target[m] + 1) for m in group
                                        for f in table.chunk_frames(m))):
                continue
            count.steps(_frames_of(table, group) + (clean if i == 0 else _frames_of(table, ahead or ())),
                        to_zero=all(target[m] + 1 == steps for m in group))
    return count.plan(new_frames, steps)


def iter_progressive(
    denoise: Denoiser,
    cond: CondOverTime,
    num_frames: int,
    frame_shape: Sequence[int],
    sigmas: torch.Tensor | None = None,
    *,
    window: int = DEFAULT_WINDOW,
    chunk: int = DEFAULT_CHUNK,
    seed: int = 0,
    prefix: torch.Tensor | None = None,
    cfg: float = DEFAULT_CFG,
    min_cfg: float = DEFAULT_MIN_CFG,
    clean_sigma: float | None = None,
    context_sigma: float | None = None,
    partitions: int = 1,
    lookahead: bool = False,
    guides: Sequence[Guide] = (),
    callback: ProgressCallback | None = None,
    step_rule: StepRule = EULER,
    dtype: torch.dtype | None = None,
    device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Progressive autoregressive sampling (PA-VDM Algorithm 1), streaming.

    ``window`` (F) noisy frames in chunks of ``chunk`` (C) at rising noise levels follow
    :func:`progressive_table` row by row; a chunk that reaches sigma 0 is yielded and stays in
    front as clean context (overlapped conditioning, Sec. 3.4). With ``prefix`` ``[B, P, 4, h, w]``
    its last ``min(C, P)`` frames are that context from the first call (Sec. 3.2 otherwise starts
    from noise). ``context_sigma`` (for models trained with ``--progressive-context-sigma``) gives
    the context as ``clean + context_sigma * eps``, eps fresh every call (stream ``-1 - call``).
    Guidance ramp over ``C + F`` window slots, clean chunk first, so every frame sees the same scales.

    For weights trained with one noise level per clip (FIFO-Diffusion, Kim et al. 2024, Sec. 4):
    ``partitions`` P splits the window's slots into P groups denoised by separate calls, so one call
    spans 1/P of the noise levels (latent partitioning); ``lookahead`` gives each group the group
    ahead of it (cleaner frames, predictions discarded) as context (lookahead denoising). Every
    call of a row sees the state before the row; every frame still walks the whole schedule.

    ``guides``: :class:`~.guides.Guide` frames the video passes through (strength 1) or is pulled
    toward (below 1), held at every step (:mod:`.guides`).
    """
    if getattr(step_rule, "whole_schedule", False):
        raise ValueError(f"sampler: a progressive window holds many noise levels per call, which the function of "
                         f"{step_rule.name} cannot take; use a sampler LongVid runs per frame (sampler_name)")
    walk = Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, prefix, step_rule)
    steps = walk.steps
    validate_window(window, chunk, steps)
    prefix_tail, prefix_frames = walk.prefix_tail(prefix, chunk)
    new_frames = count_new_frames(num_frames, prefix_frames)
    walk.hold_guides(guides, num_frames, prefix_frames, "progressive")
    table = progressive_table(window, chunk, steps, new_frames, clean_start=prefix_frames > 0)
    _check_partitions(table, partitions)
    window_scales = linear_cfg_ramp(chunk + window, min_cfg, cfg).tolist()
    if context_sigma is not None and clean_sigma is not None:
        raise ValueError("give clean_sigma (clean context) or context_sigma (noised context), not both")
    front_sigma = (walk.clean_level(clean_sigma) if context_sigma is None
                   else positive_sigma("context_sigma", context_sigma))
    plan = plan_progressive(num_frames, window=window, chunk=chunk, steps=steps, prefix_frames=prefix_frames,
                            partitions=partitions, lookahead=lookahead, guides=guides, step_rule=step_rule)
    walk.progress = CallProgress(callback, plan.denoiser_calls, table.frames)
    scales = window_scales if any(s != 1.0 for s in window_scales[chunk:]) else None
    return _progressive_frames(walk, table, prefix_tail, prefix_frames, scales, front_sigma, context_sigma is not None,
                               partitions, lookahead)


def _progressive_frames(walk: "Walk", table, clean, prefix_frames, window_scales, front_sigma, noise_context,
                        partitions, lookahead):
    chunk = table.chunk
    noisy = walk.noise(range(0))
    for call, row in enumerate(table):
        if row.enters:
            entering = table.chunk_frames(row.chunks[-1])
            fresh = walk.start_latents(range(prefix_frames + entering.start, prefix_frames + entering.stop))
            noisy = torch.cat([noisy, fresh], dim=1)
        clean_count = 0 if clean is None else clean.shape[1]
        context = clean
        if clean is not None and noise_context:
            eps = walk.noise(range(prefix_frames + row.first_chunk * chunk - clean_count,
                                   prefix_frames + row.first_chunk * chunk), stream=-1 - call)
            context = clean + front_sigma * eps
        # per noisy frame: sigma now and next, guidance scale (the ramp is over window slots, clean first)
        sigma, sigma_next, scales, start = [], [], [], {}
        for m, level in zip(row.chunks, row.levels):
            size = len(table.chunk_frames(m))
            start[m] = len(sigma)
            sigma += [walk.levels[level]] * size
            sigma_next += [walk.levels[level + 1]] * size
            first_position = chunk + table.slot(level) * chunk
            scales += window_scales[first_position:first_position + size] if window_scales else [1.0] * size
        stepped = torch.empty_like(noisy)
        for group, ahead in _row_calls(table, row, partitions, lookahead):
            first, stop = start[group[0]], start[group[-1]] + len(table.chunk_frames(group[-1]))
            if ahead is None:  # the clean chunk (PA-VDM's overlapped conditioning), at the front only
                front = context if group[0] == row.first_chunk else None
                ahead_first = first
            else:  # lookahead: the group ahead as it stands before this row's steps (predictions discarded)
                ahead_first = start[ahead[0]]
                front = noisy[:, ahead_first:first]
            count = 0 if front is None else front.shape[1]
            front_sigmas = [front_sigma] * count if ahead is None else sigma[ahead_first:first]
            stepped[:, first:stop] = walk.step(
                noisy[:, first:stop], sigma[first:stop], sigma_next[first:stop],
                prefix_frames + group[0] * chunk - count, front, front_sigmas,
                [1.0] * count + scales[first:stop] if window_scales else None)
        noisy = stepped
        del context, stepped, front  # hold only the window between calls (the consumer may decode frames meanwhile)
        finished = None
        if row.emits:
            size = len(table.chunk_frames(row.first_chunk))
            clean, noisy = noisy[:, :size], noisy[:, size:]
            # Hand out a copy: a consumer editing a frame in place must not edit the conditioning.
            finished = (prefix_frames + row.first_chunk * chunk, clean.clone())
        yield from walk.hand_out(finished)


def _row_calls(table, row, partitions: int, lookahead: bool):
    """The calls of one progressive row: ``(chunks updated, chunks ahead as context or None)``,
    front group first. Groups are the window's slots split into ``partitions`` equal parts."""
    per_group = table.chunks_per_window // partitions
    groups: list[list[int]] = []
    last = None
    for m, level in zip(row.chunks, row.levels):
        part = table.slot(level) // per_group
        if part != last:
            groups.append([])
            last = part
        groups[-1].append(m)
    return [(group, groups[i - 1] if lookahead and i > 0 else None) for i, group in enumerate(groups)]


def _frames_of(table, chunks) -> int:
    return sum(len(table.chunk_frames(m)) for m in chunks)


def _check_partitions(table, partitions) -> None:
    k = table.chunks_per_window
    if not isinstance(partitions, int) or partitions < 1 or k % partitions:
        options = [p for p in range(1, k + 1) if k % p == 0]
        raise ValueError(
            f"partitions must divide the window's {k} chunks (window {table.window} / chunk {table.chunk}) so that "
            f"every call holds whole chunks; found {partitions!r}: use one of {options}"
        )


def sample_progressive(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                       sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_progressive` collected into ``[B, N, 4, h, w]`` (prefix included, bit for bit)."""
    frames = iter_progressive(denoise, cond, num_frames, frame_shape, sigmas, **kwargs)
    return collect_frames(frames, num_frames, kwargs.get("prefix"))


__all__ = ["iter_progressive", "plan_progressive", "sample_progressive"]
