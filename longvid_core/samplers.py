"""Samplers over the denoiser contract: PA-VDM progressive rolling sampling and its references.

Every sampler is a pure function over ``denoise(x[B,F,4,h,w], sigma[B,F], cond) -> x0`` (the
k-diffusion contract with a noise level per frame; ``cond`` an :class:`SVDCond` of batch B):

- :func:`iter_progressive` — progressive autoregressive sampling (PA-VDM, Xie et al., Algorithm 1,
  Sec. 3.1-3.4), following :func:`~longvid_core.schedules.progressive_table`.
- :func:`iter_full_sequence` — ordinary SVD/ExSVD sampling: all frames share one sigma.
- :func:`iter_replacement` — windows conditioned on the previous window's last frames, held clean
  or re-noised (PA-VDM Sec. 2.2, Eqs. 5 and 6).
- :func:`iter_context_windows` — ComfyUI core's context windows: all frames at one sigma, each
  prediction fused from overlapping windows.

Each is a *window walk* (which frames the model sees at which sigma, call after call) over a
*step rule* (how one call moves the noisy frames one step down the schedule: :data:`EULER`), in
the manner of k-diffusion; a new step rule is one :class:`StepRule`, a new walk one generator
over :class:`_Walk`.

Shared conventions:

- ``iter_*`` yield finished ``(frame_index, latent[B,4,h,w])`` and hold nothing that grows with
  the video; ``sample_*`` collect them into ``[B, N, 4, h, w]``; ``plan_*`` give the exact call
  count before starting. ``callback`` gets a :class:`~longvid_core.progress.Progress` after every
  call; returning ``False`` raises :class:`~longvid_core.progress.Cancelled` after the frames that
  call finished have been yielded.
- ``num_frames`` counts a given ``prefix`` (frames ``0..P-1``); only frames ``P..N-1`` are new.
- Start noise of frame k is ``sigmas[0] * frame_noise(seed, k)`` whatever the sampler or window.
- Guidance per frame (:func:`guided_denoise`), on SVD's ``VideoLinearCFGGuidance`` ramp
  (:func:`linear_cfg_ramp`): ``min_cfg`` at the window front, ``cfg`` at the back.
- Clean frames that sit in a window only as context go in at ``clean_sigma`` (default the
  schedule's smallest positive sigma: the model takes ln(sigma)); their predictions are discarded.
- ``cond`` is one :class:`SVDCond`, or keyframes ``[(start_frame, SVDCond), ...]`` (first start
  0): frame k uses the keyframe with the largest start <= k.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, Union

import torch

from .conditioning import SVDCond
from .progress import SAMPLING, Cancelled, Progress, ProgressCallback, report
from .schedules import (
    DEFAULT_CHUNK,
    DEFAULT_STEPS,
    DEFAULT_WINDOW,
    check_sigmas,
    get_sigmas_karras,
    progressive_table,
    validate_window,
)
from .shapes import check_latents

Denoiser = Callable[[torch.Tensor, torch.Tensor, SVDCond], torch.Tensor]
Keyframes = Sequence[tuple[int, SVDCond]]
CondOverTime = Union[SVDCond, Keyframes]

# SVD's image-to-video defaults (ComfyUI's template: VideoLinearCFGGuidance min_cfg 1.0, cfg 2.5).
DEFAULT_CFG = 2.5
DEFAULT_MIN_CFG = 1.0
# Replacement baselines at the progressive default's cost per call: 26 frames per window, of which
# one chunk (2 frames) is the condition carried over from the previous window.
DEFAULT_REPLACEMENT_WINDOW = DEFAULT_WINDOW + DEFAULT_CHUNK
DEFAULT_CONDITION_FRAMES = DEFAULT_CHUNK

_MASK64 = (1 << 64) - 1


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


# ---------------------------------------------------------------------------------------------
# Building blocks shared by all samplers


def frame_noise(
    seed: int,
    frame_index: int,
    shape: Sequence[int],
    *,
    stream: int = 0,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Standard normal noise for one latent frame ``shape = (B, 4, h, w)``, a function of ``(seed,
    stream, frame_index)`` only. Stream 0 is the start noise; other streams are noise drawn while
    sampling. Drawn on the CPU so that the numbers do not depend on the device."""
    generator = torch.Generator(device="cpu").manual_seed(_mix64(seed, stream, frame_index))
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def linear_cfg_ramp(frames: int, min_cfg: float, cfg: float) -> torch.Tensor:
    """Per-position guidance scales ``linspace(min_cfg, cfg, frames)`` (SVD's VideoLinearCFGGuidance):
    ``min_cfg`` at the front (next to the known frames), ``cfg`` at the back."""
    return torch.linspace(float(min_cfg), float(cfg), int(frames), dtype=torch.float64)


def guided_denoise(
    denoise: Denoiser,
    x: torch.Tensor,
    sigma: torch.Tensor,
    cond: SVDCond,
    cfg_scales: torch.Tensor | None = None,
) -> torch.Tensor:
    """Classifier-free guidance per frame: ``x0 = uncond + scale_f * (cond - uncond)``.

    ``cfg_scales`` is ``[F]`` (one scale per frame of ``x``) or ``None`` for the conditional
    prediction alone. Both branches run as one call on a doubled batch; the unconditional cond is
    ``cond.negative()`` (SVD's zero image embedding and zero concat latent).
    """
    if cfg_scales is None:
        return denoise(x, sigma, cond)
    if cfg_scales.shape != (x.shape[1],):
        raise ValueError(
            f"cfg_scales: expected one scale per frame, shape ({x.shape[1]},); found {tuple(cfg_scales.shape)}"
        )
    batch = x.shape[0]
    both = denoise(torch.cat([x, x]), torch.cat([sigma, sigma]), SVDCond.cat([cond, cond.negative()]))
    x0_cond, x0_uncond = both[:batch], both[batch:]
    scales = cfg_scales.to(device=x.device, dtype=x0_cond.dtype)[None, :, None, None, None]
    return torch.lerp(x0_uncond, x0_cond, scales)  # uncond + scale * (cond - uncond), one buffer


def euler_step(x: torch.Tensor, x0: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step of the probability-flow ODE in EDM form (Karras et al. 2022, Algorithm 1
    without churn): ``x + (x - x0) / sigma * (sigma_next - sigma)``; lands on x0 at sigma_next 0.

    ``sigma``/``sigma_next``: floats, or tensors ``[F]`` / ``[B, F]`` with one value per frame.
    """
    sigma = _broadcast_frames(sigma, x)
    sigma_next = _broadcast_frames(sigma_next, x)
    d = x - x0
    d /= sigma  # in place on the fresh difference: two window-sized buffers per step, not four
    d *= sigma_next - sigma
    return x + d


# ---------------------------------------------------------------------------------------------
# Step rules: one step of the schedule for the noisy frames of one window


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class StepRule:
    """``step(model, x, sigma, sigma_next) -> x_next`` for noisy frames ``x[B, n, ...]`` at
    per-frame ``sigma[n]``; ``model(x, sigma[n]) -> x0`` runs one (guided) denoiser call with the
    window's context. ``model_calls``: calls per step, for the plans."""

    name: str
    step: Callable[[ModelFn, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    model_calls: int = 1


def _euler(model: ModelFn, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    return euler_step(x, model(x, sigma), sigma, sigma_next)


EULER = StepRule("euler", _euler)


# ---------------------------------------------------------------------------------------------
# Plans: exact call counts before starting


def plan_progressive(
    num_frames: int,
    *,
    window: int = DEFAULT_WINDOW,
    chunk: int = DEFAULT_CHUNK,
    steps: int = DEFAULT_STEPS,
    prefix_frames: int = 0,
    partitions: int = 1,
    lookahead: bool = False,
    step_rule: StepRule = EULER,
) -> SamplingPlan:
    """Cost of :func:`iter_progressive` for an N-frame video (including ``prefix_frames``), counted
    over the same calls the sampler makes (:func:`_row_calls`). Unpartitioned: ``(M + K - 1) * d``
    calls for M = ceil(new/C) chunks, K = F/C, d = S*C/F."""
    new_frames = _new_frames(num_frames, prefix_frames)
    table = progressive_table(window, chunk, steps, new_frames, clean_start=prefix_frames > 0)
    _check_partitions(table, partitions)
    front = min(chunk, prefix_frames)  # the clean chunk in front before the first one is emitted
    calls = evaluations = 0
    for row in table:
        clean = front if row.clean_chunk and row.first_chunk == 0 else chunk if row.clean_chunk else 0
        for i, (group, ahead) in enumerate(_row_calls(table, row, partitions, lookahead)):
            calls += 1
            evaluations += _frames_of(table, group) + (clean if i == 0 else _frames_of(table, ahead or ()))
    return _plan(calls, evaluations, new_frames, steps, step_rule)


def plan_replacement(
    num_frames: int,
    *,
    window: int = DEFAULT_REPLACEMENT_WINDOW,
    condition_frames: int = DEFAULT_CONDITION_FRAMES,
    steps: int = DEFAULT_STEPS,
    prefix_frames: int = 0,
    step_rule: StepRule = EULER,
) -> SamplingPlan:
    """Cost of :func:`iter_replacement`: S calls per window of ``window`` frames.

    The first window has ``min(E, P)`` condition frames from the prefix (none without one) and
    fills the rest with new frames; every later window has E condition frames and ``window - E``
    new frames (fewer in the last one).
    """
    new_frames = _new_frames(num_frames, prefix_frames)
    _check_replacement_window(window, condition_frames)
    first_condition = min(condition_frames, prefix_frames)
    first_new = min(window - first_condition, new_frames)
    rest = new_frames - first_new
    later_windows = -(-rest // (window - condition_frames))
    evaluations = steps * (first_condition + first_new + rest + condition_frames * later_windows)
    return _plan(steps * (1 + later_windows), evaluations, new_frames, steps, step_rule)


def plan_full_sequence(num_frames: int, *, steps: int = DEFAULT_STEPS, step_rule: StepRule = EULER) -> SamplingPlan:
    """Cost of :func:`iter_full_sequence`: S calls on all N frames."""
    new_frames = _new_frames(num_frames, 0)
    return _plan(steps, steps * new_frames, new_frames, steps, step_rule)


def _plan(steps_taken: int, frame_evaluations: int, new_frames: int, steps: int, rule: StepRule) -> SamplingPlan:
    return SamplingPlan(steps_taken * rule.model_calls, frame_evaluations * rule.model_calls, new_frames, steps)


# ---------------------------------------------------------------------------------------------
# Progressive sampler (PA-VDM)


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
    """
    walk = _Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, prefix, step_rule)
    steps = walk.steps
    validate_window(window, chunk, steps)
    prefix_tail, prefix_frames = _prefix_tail(prefix, walk, chunk)
    new_frames = _new_frames(num_frames, prefix_frames)
    table = progressive_table(window, chunk, steps, new_frames, clean_start=prefix_frames > 0)
    _check_partitions(table, partitions)
    window_scales = linear_cfg_ramp(chunk + window, min_cfg, cfg).tolist()
    if context_sigma is not None and clean_sigma is not None:
        raise ValueError("give clean_sigma (clean context) or context_sigma (noised context), not both")
    front_sigma = (_clean_sigma(walk.sigmas, clean_sigma) if context_sigma is None
                   else _positive_sigma("context_sigma", context_sigma))
    plan = plan_progressive(num_frames, window=window, chunk=chunk, steps=steps, prefix_frames=prefix_frames,
                            partitions=partitions, lookahead=lookahead, step_rule=step_rule)
    walk.progress = _Progress(callback, plan.denoiser_calls, table.frames)
    scales = window_scales if any(s != 1.0 for s in window_scales[chunk:]) else None
    return _progressive_frames(walk, table, prefix_tail, prefix_frames, scales, front_sigma, context_sigma is not None,
                               partitions, lookahead)


def _progressive_frames(walk: "_Walk", table, clean, prefix_frames, window_scales, front_sigma, noise_context,
                        partitions, lookahead):
    chunk = table.chunk
    noisy = walk.noise(range(0))
    for call, row in enumerate(table):
        if row.enters:
            entering = table.chunk_frames(row.chunks[-1])
            fresh = walk.noise(range(prefix_frames + entering.start, prefix_frames + entering.stop))
            noisy = torch.cat([noisy, walk.levels[0] * fresh], dim=1)
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


# ---------------------------------------------------------------------------------------------
# Reference samplers: full-sequence and replacement (PA-VDM Sec. 2.2)


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
    callback: ProgressCallback | None = None,
    step_rule: StepRule = EULER,
    dtype: torch.dtype | None = None,
    device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Ordinary SVD/ExSVD sampling: all N frames share one sigma through the S steps, yielded
    together after the last call. N must not exceed the model's clip (25 for SVD-XT, the table for
    ExSVD). Guidance ramp over the N frames exactly as SVD's VideoLinearCFGGuidance."""
    walk = _Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, None, step_rule)
    plan = plan_full_sequence(num_frames, steps=walk.steps, step_rule=step_rule)
    walk.progress = _Progress(callback, plan.denoiser_calls, plan.new_frames)
    return _window_frames(walk, num_frames, None, 0, window=num_frames, condition_frames=0,
                          renoise_condition=False, cfg=cfg, min_cfg=min_cfg, clean_sigma=walk.levels[-2])


def sample_full_sequence(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                         sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_full_sequence` collected into ``[B, N, 4, h, w]``."""
    return collect_frames(iter_full_sequence(denoise, cond, num_frames, frame_shape, sigmas, **kwargs), num_frames)


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
    """
    walk = _Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, prefix, step_rule)
    _check_replacement_window(window, condition_frames)
    prefix_tail, prefix_frames = _prefix_tail(prefix, walk, condition_frames)
    plan = plan_replacement(num_frames, window=window, condition_frames=condition_frames, steps=walk.steps,
                            prefix_frames=prefix_frames, step_rule=step_rule)
    walk.progress = _Progress(callback, plan.denoiser_calls, plan.new_frames)
    return _window_frames(walk, num_frames, prefix_tail, prefix_frames, window=window,
                          condition_frames=condition_frames, renoise_condition=renoise_condition, cfg=cfg,
                          min_cfg=min_cfg, clean_sigma=_clean_sigma(walk.sigmas, clean_sigma))


def sample_replacement(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                       sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_replacement` collected into ``[B, N, 4, h, w]`` (prefix included, bit for bit)."""
    frames = iter_replacement(denoise, cond, num_frames, frame_shape, sigmas, **kwargs)
    return collect_frames(frames, num_frames, kwargs.get("prefix"))


def _window_frames(walk: "_Walk", num_frames, condition, next_frame, *, window, condition_frames,
                   renoise_condition, cfg, min_cfg, clean_sigma):
    """The full-sequence and replacement walk: one window after another, all noisy frames of a
    window at one sigma. ``condition``: clean frames in front, or None."""
    window_index = 0
    while next_frame < num_frames:
        condition_count = 0 if condition is None else condition.shape[1]
        new_count = min(window - condition_count, num_frames - next_frame)
        first_frame = next_frame - condition_count
        x = walk.levels[0] * walk.noise(range(next_frame, next_frame + new_count))
        scales = linear_cfg_ramp(condition_count + new_count, min_cfg, cfg).tolist()
        use_cfg = any(s != 1.0 for s in scales[condition_count:])
        for i in range(walk.steps):
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


# ---------------------------------------------------------------------------------------------
# Context windows, as ComfyUI core runs SVD on long clips (ContextWindowsManual)


def context_windows(num_frames: int, length: int, overlap: int) -> list[range]:
    """ComfyUI's ``standard_static`` windows: ``length`` frames every ``length - overlap``, the last
    one moved back to end at the last frame; one window when the video is no longer than that."""
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"context window length must be a whole number of frames >= 1; got {length!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < length:
        raise ValueError(f"context overlap must be between 0 and the window length - 1 = {length - 1} frames; "
                         f"got {overlap!r}")
    if num_frames <= length:
        return [range(num_frames)]
    windows = []
    for start in range(0, num_frames, length - overlap):
        if start + length >= num_frames:
            windows.append(range(num_frames - length, num_frames))
            break
        windows.append(range(start, start + length))
    return windows


def pyramid_weights(length: int) -> list[float]:
    """ComfyUI's default fuse weights: 1, 2, ... up to the middle of the window and back down."""
    half = (length + 1) // 2
    rising = list(range(1, half + 1))
    return [float(w) for w in rising + rising[::-1][length % 2:]]


def plan_context_windows(num_frames: int, *, length: int, overlap: int, steps: int = DEFAULT_STEPS,
                         step_rule: StepRule = EULER) -> SamplingPlan:
    """Cost of :func:`iter_context_windows`: one call per window per step."""
    new_frames = _new_frames(num_frames, 0)
    windows = context_windows(num_frames, length, overlap)
    return _plan(steps * len(windows), steps * sum(len(w) for w in windows), new_frames, steps, step_rule)


def iter_context_windows(
    denoise: Denoiser,
    cond: CondOverTime,
    num_frames: int,
    frame_shape: Sequence[int],
    sigmas: torch.Tensor | None = None,
    *,
    length: int,
    overlap: int,
    seed: int = 0,
    cfg: float = DEFAULT_CFG,
    min_cfg: float = DEFAULT_MIN_CFG,
    callback: ProgressCallback | None = None,
    step_rule: StepRule = EULER,
    dtype: torch.dtype | None = None,
    device=None,
    state_device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """All N frames at one noise level, each step's prediction made window by window
    (:func:`context_windows`) and fused with :func:`pyramid_weights`: what a user of core ComfyUI
    gets from SVD with Context Windows (Manual) at its defaults. Every window sees the full
    schedule; guidance ramps over the whole video (VideoLinearCFGGuidance on the full batch).

    The method holds all N frames until the last step. They live on ``state_device`` (default: host
    memory) and only one window at a time goes to ``device``, so device memory does not grow with
    the video; host memory holds about three latents per frame. Frames are yielded after the last
    step, on ``state_device``."""
    walk = _Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, None, step_rule)
    plan = plan_context_windows(num_frames, length=length, overlap=overlap, steps=walk.steps, step_rule=step_rule)
    walk.progress = _Progress(callback, plan.denoiser_calls, plan.new_frames)
    store = _VideoAtOneSigma(walk, num_frames, context_windows(num_frames, length, overlap),
                             linear_cfg_ramp(num_frames, min_cfg, cfg), state_device)
    return _context_window_frames(walk, store)


class _VideoAtOneSigma:
    """What context windows hold for the whole video, on ``device`` (default: host memory): the
    frames, the windows, their fuse weights and the guidance per frame. Everything else a call
    needs is one window."""

    def __init__(self, walk: "_Walk", num_frames: int, windows: list[range], scales: torch.Tensor, device=None):
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.num_frames = num_frames
        self.windows = windows
        self.scales = scales if bool((scales != 1.0).any()) else None  # float64, CPU, as guided_denoise takes it
        self.weights = [torch.tensor(pyramid_weights(len(w)), dtype=walk.dtype, device=self.device) for w in windows]
        self.sigma_dtype = walk.sigmas.dtype
        # frame by frame: frame_noise draws on the CPU, so the numbers are the same on any device
        self.frames = walk.levels[0] * torch.stack(
            [frame_noise(walk.seed, k, walk.frame_shape, dtype=walk.dtype, device=self.device)
             for k in range(num_frames)], dim=1)

    def sigma(self, value: float) -> torch.Tensor:
        return torch.full((self.num_frames,), value, dtype=self.sigma_dtype, device=self.device)


def _context_window_frames(walk: "_Walk", store: _VideoAtOneSigma):
    batch = walk.frame_shape[0]

    def fused(x: torch.Tensor, x_sigma: torch.Tensor) -> torch.Tensor:
        x0 = torch.zeros_like(x)
        total = torch.zeros(store.num_frames, dtype=x.dtype, device=x.device)
        for window, weight in zip(store.windows, store.weights):
            part = slice(window.start, window.stop)
            window_sigma = x_sigma[part].to(walk.sigmas.device).expand(batch, -1).contiguous()
            prediction = walk.call(x[:, part].to(walk.device), window_sigma,
                                   walk.conds.for_frames(window.start, len(window)),
                                   None if store.scales is None else store.scales[part], window.start)
            x0[:, part] += prediction.to(x.device) * weight[None, :, None, None, None]
            total[part] += weight
            del prediction, window_sigma  # one window on the model's device at a time
        return x0 / total[None, :, None, None, None]

    for i in range(walk.steps):
        store.frames = walk.step_rule.step(fused, store.frames, store.sigma(walk.levels[i]),
                                           store.sigma(walk.levels[i + 1]))
        yield from walk.hand_out((0, store.frames.clone()) if i == walk.steps - 1 else None)


def sample_context_windows(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                           sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_context_windows` collected into ``[B, N, 4, h, w]``."""
    return collect_frames(iter_context_windows(denoise, cond, num_frames, frame_shape, sigmas, **kwargs), num_frames)


# ---------------------------------------------------------------------------------------------
# Collecting streamed frames


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


# ---------------------------------------------------------------------------------------------
# Internals


class _KeyframeConds:
    """Which :class:`SVDCond` each frame uses (see the module doc); caches the last window's cond."""

    def __init__(self, cond: CondOverTime):
        if isinstance(cond, (list, tuple)):
            if not cond:
                raise ValueError("keyframes: expected at least one (start_frame, SVDCond) pair; got an empty list")
            try:
                pairs = sorted(((int(start), c) for start, c in cond), key=lambda pair: pair[0])
            except (TypeError, ValueError):
                raise ValueError(
                    "cond: expected one SVDCond or a list of (start_frame, SVDCond) pairs; "
                    f"got a list starting with {cond[0]!r}"
                ) from None
            starts = [start for start, _ in pairs]
            if starts[0] != 0:
                raise ValueError(f"keyframes: the first keyframe must start at frame 0; it starts at {starts[0]}")
            if len(set(starts)) != len(starts):
                raise ValueError(f"keyframes: two keyframes start at the same frame; starts are {starts}")
            for start, c in pairs:
                if isinstance(c, SVDCond) and c.per_frame:
                    raise ValueError(
                        f"keyframes: the keyframe at frame {start} has a per-frame cond; expected one cond "
                        "for all of its frames ([B, 1, D] embedding, [B, 4, h, w] concat latent)"
                    )
            self._starts = starts
            self._conds = [c for _, c in pairs]
        else:
            self._starts, self._conds = [0], [cond]
        self._cached_key = None
        self._cached = None

    def for_frames(self, first_frame: int, count: int):
        """The cond for the contiguous frames ``first_frame .. first_frame + count - 1``."""
        key = (first_frame, count)
        if key != self._cached_key:
            first = bisect.bisect_right(self._starts, first_frame) - 1
            last = bisect.bisect_right(self._starts, first_frame + count - 1) - 1
            if first == last:
                cond = self._conds[first]
            else:
                frames = range(first_frame, first_frame + count)
                cond = SVDCond.stack_frames([self._conds[bisect.bisect_right(self._starts, k) - 1] for k in frames])
            self._cached_key, self._cached = key, cond
        return self._cached


class _Progress:
    """Counts calls and finished frames, informs the callback, remembers a cancel request."""

    def __init__(self, callback, calls_total: int, frames_total: int):
        self.callback = callback
        self.calls_total = calls_total
        self.frames_total = frames_total
        self.calls_done = 0
        self.frames_done = 0

    def report(self, finished: tuple[int, torch.Tensor] | None) -> bool:
        """Account for one denoiser call (and the frames ``(first_index, [B, n, ...])`` it finished);
        True when the callback asks to stop."""
        self.calls_done += 1
        newest_index = newest = None
        if finished is not None:
            first_index, frames = finished
            self.frames_done += frames.shape[1]
            newest_index, newest = first_index + frames.shape[1] - 1, frames[:, -1]
        return report(self.callback, Progress(SAMPLING, self.calls_done, self.calls_total, self.frames_done,
                                              self.frames_total, newest_index, newest))

    def cancelled(self) -> Cancelled:
        return Cancelled(SAMPLING, self.calls_done, self.frames_done)


class _Walk:
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
        self.progress: _Progress | None = None
        self._unreported = False  # a call made but not yet reported

    @classmethod
    def start(cls, denoise, cond, frame_shape, sigmas, seed, dtype, device, prefix, step_rule) -> "_Walk":
        """Check the common arguments (before any call) and set up the walk."""
        sigmas = _prepare_sigmas(sigmas, device)
        check_sigmas(sigmas)
        frame_shape = _check_frame_shape(frame_shape)
        if dtype is None:
            dtype = prefix.dtype if prefix is not None else torch.float32
        if device is None:
            device = prefix.device if prefix is not None else torch.device("cpu")
        return cls(denoise, _KeyframeConds(cond), sigmas, frame_shape, seed, dtype, torch.device(device), step_rule)

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
        ``sigma_next`` per frame, by the step rule. The model also sees ``context`` in front at
        ``context_sigma``; its predictions are discarded. ``scales``: guidance per window frame."""
        count = 0 if context is None else context.shape[1]
        cond = self.conds.for_frames(first_frame, count + noisy.shape[1])
        cfg_scales = None if scales is None else torch.tensor(scales, dtype=torch.float64)
        front = self._values(context_sigma)
        batch = noisy.shape[0]

        def model(x: torch.Tensor, x_sigma: torch.Tensor) -> torch.Tensor:
            window = x if context is None else torch.cat([context, x], dim=1)
            frame_sigma = torch.cat([front, x_sigma]).expand(batch, -1).contiguous()
            return self.call(window, frame_sigma, cond, cfg_scales, first_frame)[:, count:]

        return self.step_rule.step(model, noisy, self._values(sigma), self._values(sigma_next))

    def call(self, x, sigma, cond, cfg_scales, first_frame: int):
        """One (guided) denoiser call on the video frames from ``first_frame``. The call before it
        is reported first, so a cancel asked for there stops before this one; the last call of a
        step is reported by :meth:`hand_out`. A denoiser with a ``window`` method (a caching one,
        :mod:`longvid_core.step_cache`) is told which frames the call holds."""
        if self._unreported:
            self._unreported = False
            if self.progress.report(None):
                raise self.progress.cancelled()
        if hasattr(self.denoise, "window"):
            self.denoise.window(first_frame, x.shape[1])
        out = guided_denoise(self.denoise, x, sigma, cond, cfg_scales)
        self._unreported = True
        return out

    def hand_out(self, finished: tuple[int, torch.Tensor] | None):
        """After a step: report its last call, yield the frames it finished, then stop if asked to."""
        self._unreported = False
        cancelled = self.progress.report(finished)
        if finished is not None:
            first_index, frames = finished
            for i in range(frames.shape[1]):
                yield first_index + i, frames[:, i]
        if cancelled:
            raise self.progress.cancelled()

    def _values(self, values: Sequence[float]) -> torch.Tensor:
        # built from sigmas.tolist() values, so the model sees exactly the schedule's entries
        return torch.tensor(list(values), dtype=self.sigmas.dtype, device=self.sigmas.device)


def _mix64(*values: int) -> int:
    """SplitMix64 over the values: a 64-bit generator seed for each distinct tuple."""
    state = 0
    for value in values:
        state = (state + (int(value) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state


def _broadcast_frames(sigma, x: torch.Tensor):
    if not isinstance(sigma, torch.Tensor) or sigma.dim() == 0:
        return sigma
    sigma = sigma.to(device=x.device, dtype=x.dtype)
    if sigma.dim() == 1:
        sigma = sigma[None]
    return sigma[:, :, None, None, None]


def _prepare_sigmas(sigmas, device) -> torch.Tensor:
    if sigmas is None:
        sigmas = get_sigmas_karras(DEFAULT_STEPS)
    return sigmas.to(device) if device is not None and isinstance(sigmas, torch.Tensor) else sigmas


def _positive_sigma(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0 (the model takes ln(sigma)); got {value}")
    return float(value)


def _clean_sigma(sigmas: torch.Tensor, clean_sigma: float | None) -> float:
    return sigmas[-2].item() if clean_sigma is None else _positive_sigma("clean_sigma", clean_sigma)


def _check_frame_shape(frame_shape) -> tuple[int, ...]:
    shape = tuple(frame_shape) if isinstance(frame_shape, (tuple, list, torch.Size)) else None
    if shape is None or len(shape) != 4 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(
            f"frame_shape: expected (batch, channels, height, width) of one latent frame, e.g. (1, 4, 72, 128); "
            f"got {frame_shape!r}"
        )
    return shape


def _prefix_tail(prefix, walk: _Walk, keep: int):
    """The last ``keep`` prefix frames (a copy: the caller's tensor is never touched) and P."""
    if prefix is None:
        return None, 0
    batch, frames = check_latents(prefix, "prefix")
    frame_shape = walk.frame_shape
    if (batch, *prefix.shape[2:]) != tuple(frame_shape):
        raise ValueError(
            f"prefix: expected frames of shape {tuple(frame_shape)} (frame_shape), i.e. "
            f"[{frame_shape[0]}, P, {', '.join(map(str, frame_shape[1:]))}]; found {list(prefix.shape)}"
        )
    if frames == 0:
        return None, 0
    return prefix[:, -keep:].to(device=walk.device, dtype=walk.dtype, copy=True), frames

def _new_frames(num_frames, prefix_frames: int) -> int:
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames must be a whole number >= 1; got {num_frames!r}")
    if num_frames <= prefix_frames:
        raise ValueError(
            f"num_frames ({num_frames}) is the length of the whole output video including the {prefix_frames} "
            f"prefix frames; it must exceed {prefix_frames} to generate anything"
        )
    return num_frames - prefix_frames


def _check_replacement_window(window: int, condition_frames: int) -> None:
    if not isinstance(window, int) or window < 2:
        raise ValueError(f"window must be at least 2 frames (condition + new); got {window!r}")
    if not isinstance(condition_frames, int) or not 1 <= condition_frames < window:
        raise ValueError(
            f"condition_frames must be between 1 and window - 1 = {window - 1} so that every window adds new "
            f"frames; got {condition_frames!r}"
        )


__all__ = [
    "DEFAULT_CFG",
    "DEFAULT_MIN_CFG",
    "DEFAULT_REPLACEMENT_WINDOW",
    "DEFAULT_CONDITION_FRAMES",
    "EULER",
    "SamplingPlan",
    "StepRule",
    "frame_noise",
    "linear_cfg_ramp",
    "guided_denoise",
    "euler_step",
    "plan_progressive",
    "plan_replacement",
    "plan_full_sequence",
    "iter_progressive",
    "sample_progressive",
    "iter_full_sequence",
    "sample_full_sequence",
    "iter_replacement",
    "sample_replacement",
    "collect_frames",
    "context_windows",
    "iter_context_windows",
    "plan_context_windows",
    "pyramid_weights",
    "sample_context_windows",
]
