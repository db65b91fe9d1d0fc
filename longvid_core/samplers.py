"""Samplers over the denoiser contract: PA-VDM progressive rolling sampling and its references.

Every sampler is a pure function over ``denoise(x[B,F,4,h,w], sigma[B,F], cond) -> x0`` (the
k-diffusion contract with a noise level per frame; ``cond`` an :class:`SVDCond` of batch B):

- :func:`iter_progressive` — progressive autoregressive sampling (PA-VDM, Xie et al., Algorithm 1
  with the initialization/termination stages of Sec. 3.2, chunked frames Sec. 3.3 and overlapped
  conditioning Sec. 3.4), following :func:`~longvid_core.schedules.progressive_table`.
- :func:`iter_full_sequence` — ordinary SVD/ExSVD Euler sampling: all frames share one sigma.
- :func:`iter_replacement` — autoregressive windows conditioned on the previous window's last
  frames, replacement-without-noise or replacement-with-noise (PA-VDM Sec. 2.2, Eqs. 5 and 6).

Each ``iter_*`` is a generator of finished latent frames ``(frame_index, latent[B,4,h,w])`` that
keeps nothing growing with the video length; each ``sample_*`` collects the same frames into
``[B, N, 4, h, w]``; each ``plan_*`` tells the exact number of denoiser calls before starting.
The optional ``callback`` gets a :class:`SamplingProgress` after every denoiser call; returning
``False`` (or raising :class:`SamplingCancelled`) stops sampling before the next call.

Shared conventions:

- ``num_frames`` is the length of the output video *including* a given ``prefix`` (frames
  ``0..P-1``); frame indices are positions in that video. Generators yield only the new frames
  ``P..N-1``; ``sample_*`` returns all N, the prefix copied bit for bit.
- Start noise of frame k is ``sigmas[0] * frame_noise(seed, k)``: it depends only on
  ``(seed, k)``, so one seed gives the same start noise whatever the sampler or window size.
- Euler steps in EDM form, per frame (:func:`euler_step`); the last step (sigma -> 0) lands on the
  denoised prediction.
- Classifier-free guidance per frame (:func:`guided_denoise`): conditional and unconditional
  (``cond.negative()``, SVD's zero image embedding and zero concat latent) run as one batched call;
  the unconditional pass is skipped when every scale is 1. Scales follow SVD's
  ``VideoLinearCFGGuidance`` ramp (:func:`linear_cfg_ramp`), ``min_cfg`` at the window front,
  ``cfg`` at the back.
- Clean frames that sit in a window only as conditioning are passed to the model at
  ``clean_sigma`` (default: the schedule's smallest positive sigma, ``sigmas[-2]``, i.e. SVD's
  sigma_min 0.002 for Karras sigmas), unchanged, because the model needs sigma > 0
  (c_noise = ln(sigma)/4); their predictions are discarded.
- Conditioning over time: ``cond`` is one :class:`SVDCond` for the whole video, or keyframes
  ``[(start_frame, SVDCond), ...]`` (first start 0): frame k uses the keyframe with the largest
  ``start_frame <= k``. A window whose frames span two keyframes gets a per-frame cond built with
  :meth:`SVDCond.stack_frames`. This chains first frames from several prompts into one video.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, Union

import torch

from .conditioning import SVDCond
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


class SamplingCancelled(Exception):
    """Sampling was stopped by the progress callback; the frames yielded so far are valid."""

    def __init__(self, calls_done: int | None = None, frames_done: int | None = None):
        if calls_done is None:
            super().__init__("sampling cancelled")
        else:
            super().__init__(f"sampling cancelled after {calls_done} denoiser calls and {frames_done} finished frames")
        self.calls_done = calls_done
        self.frames_done = frames_done


@dataclass(frozen=True)
class SamplingProgress:
    """What the callback receives after every denoiser call.

    ``frames_done``/``frames_total`` count new frames (prefix excluded). ``newest_frame_index`` and
    ``newest_latent`` (``[B, 4, h, w]``) are the most recently finished frame, or ``None``.
    """

    calls_done: int
    calls_total: int
    frames_done: int
    frames_total: int
    newest_frame_index: int | None
    newest_latent: torch.Tensor | None


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
    """Standard normal noise for one latent frame, a function of ``(seed, stream, frame_index)`` only.

    ``shape`` is one frame's ``(B, 4, h, w)``. Stream 0 is the start noise; other streams are for
    noise drawn during sampling (replacement-with-noise re-noising). Drawn on the CPU so that the
    numbers do not depend on the device.
    """
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
    prediction alone. Both branches run as one call on a doubled batch: ``x`` and ``sigma``
    stacked twice, cond ``SVDCond.cat([cond, cond.negative()])`` (SVD's unconditional branch:
    zero image embedding and zero concat latent).
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
    """One Euler step of the probability-flow ODE in EDM form (the first-order step of Karras et al.
    2022, Algorithm 1; k-diffusion's ``sample_euler`` without churn): ``d = (x - x0) / sigma``,
    ``x + d * (sigma_next - sigma)``.

    ``sigma``/``sigma_next``: floats, or tensors ``[F]`` / ``[B, F]`` with one value per frame of
    ``x[B, F, C, h, w]``.
    """
    sigma = _broadcast_frames(sigma, x)
    sigma_next = _broadcast_frames(sigma_next, x)
    d = x - x0
    d /= sigma  # in place on the fresh difference: two window-sized buffers per step, not four
    d *= sigma_next - sigma
    return x + d


# ---------------------------------------------------------------------------------------------
# Plans: exact call counts before starting


def plan_progressive(
    num_frames: int,
    *,
    window: int = DEFAULT_WINDOW,
    chunk: int = DEFAULT_CHUNK,
    steps: int = DEFAULT_STEPS,
    prefix_frames: int = 0,
) -> SamplingPlan:
    """Cost of :func:`iter_progressive` for an N-frame video (including ``prefix_frames``).

    Calls: ``(M + K - 1) * d`` for M = ceil(new/C) chunks, K = F/C, d = S*C/F. Frame evaluations:
    every new frame S times as a noisy frame, plus the clean chunk: each emitted chunk but the last
    sits in front for d calls, and a prefix chunk for the first S calls.
    """
    new_frames = _new_frames(num_frames, prefix_frames)
    table = progressive_table(window, chunk, steps, new_frames, clean_start=prefix_frames > 0)
    clean_evaluations = table.chunk_spacing * table.chunk * (table.num_chunks - 1)
    if prefix_frames > 0:
        clean_evaluations += min(chunk, prefix_frames) * steps
    return SamplingPlan(
        denoiser_calls=len(table),
        frame_evaluations=steps * new_frames + clean_evaluations,
        new_frames=new_frames,
        steps=steps,
    )


def plan_replacement(
    num_frames: int,
    *,
    window: int = DEFAULT_REPLACEMENT_WINDOW,
    condition_frames: int = DEFAULT_CONDITION_FRAMES,
    steps: int = DEFAULT_STEPS,
    prefix_frames: int = 0,
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
    return SamplingPlan(
        denoiser_calls=steps * (1 + later_windows),
        frame_evaluations=steps * (first_condition + first_new + rest + condition_frames * later_windows),
        new_frames=new_frames,
        steps=steps,
    )


def plan_full_sequence(num_frames: int, *, steps: int = DEFAULT_STEPS) -> SamplingPlan:
    """Cost of :func:`iter_full_sequence`: S calls on all N frames."""
    new_frames = _new_frames(num_frames, 0)
    return SamplingPlan(steps, steps * new_frames, new_frames, steps)


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
    callback: Callable[[SamplingProgress], object] | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Progressive autoregressive sampling (PA-VDM Algorithm 1, Sec. 3.1-3.4), streaming.

    A window of ``window`` (F) noisy frames in chunks of ``chunk`` (C) frames at progressively
    higher noise levels, following :func:`progressive_table` row by row. Every call lowers every
    frame one step with a per-frame Euler step. When the front chunk reaches sigma = 0 it is
    yielded and stays in front as the clean conditioning chunk (overlapped conditioning, Sec. 3.4;
    passed at ``clean_sigma``, its prediction unused), and fresh noise enters at the back.

    - Initialization (Sec. 3.2): from pure noise with only the image condition, or, with
      ``prefix`` ``[B, P, 4, h, w]`` ("extend this video"), with the last ``min(C, P)`` prefix
      frames as the clean chunk from the first call. Termination: nothing enters; the window
      drains until every frame is clean.
    - Output: frames ``P..N-1`` (``num_frames`` = N counts the prefix), any N > P; the last chunk is
      shorter when N - P is not a multiple of C. Every frame is evaluated exactly at
      ``sigmas[0], ..., sigmas[S-1]`` in order; S = ``len(sigmas) - 1`` must be a multiple of F/C.
    - Guidance: ramp ``linspace(min_cfg, cfg, C + F)`` over the window positions with the clean
      chunk in front (the window treated like one SVD clip); a chunk at level s sits in slot
      ``K-1 - s // d``, so every frame sees the same sequence of scales.
    - Memory: the window (at most C + F frames) and the constant table; nothing grows with N.
    - Context noise (``context_sigma``, for models trained with ``--progressive-context-sigma``):
      the clean chunk goes in as ``clean + context_sigma * eps`` at sigma ``context_sigma``, eps
      fresh every call (``frame_noise`` stream ``-1 - call``), instead of exactly at ``clean_sigma``;
      the yielded frames are unchanged. Why: ``training/noise_levels.py``, "Context noise".

    Yields ``(frame_index, latent[B, 4, h, w])`` in order. Raises ``ValueError`` for impossible
    settings before any call, and :class:`SamplingCancelled` when the callback returns ``False``.
    """
    sigmas = _prepare_sigmas(sigmas, device)
    steps = check_sigmas(sigmas)
    validate_window(window, chunk, steps)
    frame_shape = _check_frame_shape(frame_shape)
    dtype, device = _resolve_dtype_device(dtype, device, prefix)
    prefix_tail, prefix_frames = _prefix_tail(prefix, frame_shape, chunk, dtype, device)
    new_frames = _new_frames(num_frames, prefix_frames)
    table = progressive_table(window, chunk, steps, new_frames, clean_start=prefix_frames > 0)
    conds = _KeyframeConds(cond)
    window_scales = linear_cfg_ramp(chunk + window, min_cfg, cfg).tolist()
    use_cfg = any(s != 1.0 for s in window_scales[chunk:])
    if context_sigma is not None and clean_sigma is not None:
        raise ValueError("give clean_sigma (clean context) or context_sigma (noised context), not both")
    front_sigma = (_clean_sigma(sigmas, clean_sigma) if context_sigma is None
                   else _positive_sigma("context_sigma", context_sigma))
    progress = _Progress(callback, len(table), table.frames)
    return _progressive_frames(
        denoise, conds, table, sigmas, frame_shape, seed, prefix_tail, prefix_frames,
        window_scales if use_cfg else None, front_sigma, context_sigma is not None, progress, dtype, device,
    )


def _progressive_frames(
    denoise, conds, table, sigmas, frame_shape, seed, clean, prefix_frames, window_scales, clean_sigma,
    noise_context, progress, dtype, device,
):
    sigma_values = sigmas.tolist()
    batch = frame_shape[0]
    chunk = table.chunk
    noisy = torch.empty((batch, 0, *frame_shape[1:]), dtype=dtype, device=device)
    for call, row in enumerate(table):
        if row.enters:
            new_chunk = table.chunk_frames(row.chunks[-1])
            fresh = [frame_noise(seed, prefix_frames + k, frame_shape, dtype=dtype, device=device) for k in new_chunk]
            noisy = torch.cat([noisy, sigma_values[0] * torch.stack(fresh, dim=1)], dim=1)
        clean_count = 0 if clean is None else clean.shape[1]
        # The clean chunk's prediction is discarded, so its guidance scale does not matter.
        noisy_sigma, next_sigma, scales = [], [], [1.0] * clean_count
        for m, level in zip(row.chunks, row.levels):
            size = len(table.chunk_frames(m))
            noisy_sigma += [sigma_values[level]] * size
            next_sigma += [sigma_values[level + 1]] * size
            if window_scales is not None:  # the ramp is over window slots, clean chunk first
                first_position = chunk + table.slot(level) * chunk
                scales += window_scales[first_position:first_position + size]
        first_frame = prefix_frames + row.first_chunk * chunk - clean_count
        context = clean
        if clean is not None and noise_context:
            eps = [frame_noise(seed, first_frame + i, frame_shape, stream=-1 - call, dtype=dtype, device=device)
                   for i in range(clean_count)]
            context = clean + clean_sigma * torch.stack(eps, dim=1)
        x = noisy if context is None else torch.cat([context, noisy], dim=1)
        sigma = _frame_sigmas([clean_sigma] * clean_count + noisy_sigma, batch, sigmas)
        x0 = guided_denoise(
            denoise, x, sigma, conds.for_frames(first_frame, x.shape[1]),
            None if window_scales is None else torch.tensor(scales, dtype=torch.float64),
        )
        noisy = euler_step(
            noisy, x0[:, clean_count:],
            torch.tensor(noisy_sigma, dtype=sigmas.dtype), torch.tensor(next_sigma, dtype=sigmas.dtype),
        )
        del x, x0, context  # hold only the window between calls (the consumer may decode frames meanwhile)
        finished = None
        if row.emits:
            size = len(table.chunk_frames(row.first_chunk))
            clean, noisy = noisy[:, :size], noisy[:, size:]
            # Hand out a copy: a consumer editing a frame in place must not edit the conditioning.
            finished = (prefix_frames + row.first_chunk * chunk, clean.clone())
        cancelled = progress.report(finished)
        if finished is not None:
            first_index, frames = finished
            for i in range(frames.shape[1]):
                yield first_index + i, frames[:, i]
        if cancelled:
            raise progress.cancelled()


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
    callback: Callable[[SamplingProgress], object] | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Ordinary SVD/ExSVD Euler sampling: all N frames share one sigma through the S steps.

    N must not exceed what the model handles in one clip (e.g. 25 for SVD-XT, 128 for ExSVD); the
    frames are yielded together after the last call. Guidance ramp over the N frames exactly as
    SVD's VideoLinearCFGGuidance.
    """
    sigmas = _prepare_sigmas(sigmas, device)
    steps = check_sigmas(sigmas)
    frame_shape = _check_frame_shape(frame_shape)
    dtype, device = _resolve_dtype_device(dtype, device, None)
    plan = plan_full_sequence(num_frames, steps=steps)
    return _window_frames(
        denoise, _KeyframeConds(cond), sigmas, frame_shape, seed, num_frames, None, 0,
        window=num_frames, condition_frames=0, renoise_condition=False, cfg=cfg, min_cfg=min_cfg,
        clean_sigma=_clean_sigma(sigmas, None), progress=_Progress(callback, plan.denoiser_calls, plan.new_frames),
        dtype=dtype, device=device,
    )


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
    callback: Callable[[SamplingProgress], object] | None = None,
    dtype: torch.dtype | None = None,
    device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Autoregressive replacement sampling (PA-VDM Sec. 2.2), streaming one window at a time.

    Each window of ``window`` (F) frames starts with the last ``condition_frames`` (E) finished
    frames (from ``prefix`` for the first window, if given; the first window without a prefix is
    plain full-sequence sampling) followed by new noise frames; all noisy frames share one sigma
    and take S Euler steps. The condition frames are either

    - ``renoise_condition=False`` — replacement-without-noise (Eq. 5): held clean, passed at
      ``clean_sigma`` and put back unchanged every step; or
    - ``renoise_condition=True`` — replacement-with-noise (Eq. 6): re-noised to the current level
      each step with fresh noise (``x = clean + sigma_i * eps``, eps from ``frame_noise`` stream
      ``1 + window_index * S + i``) and passed at that sigma.

    Their predictions are discarded either way. Guidance ramp over each window's frames. Same
    output convention as :func:`iter_progressive` (``num_frames`` includes the prefix).
    """
    sigmas = _prepare_sigmas(sigmas, device)
    steps = check_sigmas(sigmas)
    frame_shape = _check_frame_shape(frame_shape)
    dtype, device = _resolve_dtype_device(dtype, device, prefix)
    _check_replacement_window(window, condition_frames)
    prefix_tail, prefix_frames = _prefix_tail(prefix, frame_shape, condition_frames, dtype, device)
    plan = plan_replacement(
        num_frames, window=window, condition_frames=condition_frames, steps=steps, prefix_frames=prefix_frames
    )
    return _window_frames(
        denoise, _KeyframeConds(cond), sigmas, frame_shape, seed, num_frames, prefix_tail, prefix_frames,
        window=window, condition_frames=condition_frames, renoise_condition=renoise_condition, cfg=cfg,
        min_cfg=min_cfg, clean_sigma=_clean_sigma(sigmas, clean_sigma),
        progress=_Progress(callback, plan.denoiser_calls, plan.new_frames), dtype=dtype, device=device,
    )


def sample_replacement(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                       sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_replacement` collected into ``[B, N, 4, h, w]`` (prefix included, bit for bit)."""
    frames = iter_replacement(denoise, cond, num_frames, frame_shape, sigmas, **kwargs)
    return collect_frames(frames, num_frames, kwargs.get("prefix"))


def _window_frames(
    denoise, conds, sigmas, frame_shape, seed, num_frames, condition, prefix_frames, *, window, condition_frames,
    renoise_condition, cfg, min_cfg, clean_sigma, progress, dtype, device,
):
    """Shared loop of the full-sequence and replacement samplers: one window after another, all
    noisy frames of a window at one sigma. ``condition``: clean frames in front, or None."""
    sigma_values = sigmas.tolist()
    steps = len(sigma_values) - 1
    batch = frame_shape[0]
    next_frame = prefix_frames
    window_index = 0
    while next_frame < num_frames:
        condition_count = 0 if condition is None else condition.shape[1]
        new_count = min(window - condition_count, num_frames - next_frame)
        first_frame = next_frame - condition_count
        new_frames = range(next_frame, next_frame + new_count)
        x = sigma_values[0] * torch.stack(
            [frame_noise(seed, k, frame_shape, dtype=dtype, device=device) for k in new_frames], dim=1
        )
        scales = linear_cfg_ramp(condition_count + new_count, min_cfg, cfg)
        use_cfg = bool((scales[condition_count:] != 1.0).any())
        window_cond = conds.for_frames(first_frame, condition_count + new_count)
        for i in range(steps):
            sigma, sigma_next = sigma_values[i], sigma_values[i + 1]
            if condition is None:
                window_x, frame_sigmas = x, [sigma] * new_count
            elif renoise_condition:
                eps = torch.stack(
                    [frame_noise(seed, k, frame_shape, stream=1 + window_index * steps + i, dtype=dtype, device=device)
                     for k in range(first_frame, next_frame)],
                    dim=1,
                )
                window_x = torch.cat([condition + sigma * eps, x], dim=1)
                frame_sigmas = [sigma] * (condition_count + new_count)
            else:
                window_x = torch.cat([condition, x], dim=1)
                frame_sigmas = [clean_sigma] * condition_count + [sigma] * new_count
            x0 = guided_denoise(
                denoise, window_x, _frame_sigmas(frame_sigmas, batch, sigmas), window_cond, scales if use_cfg else None
            )
            x = euler_step(x, x0[:, condition_count:], sigma, sigma_next)
            del window_x, x0
            # Hand out a copy: x also seeds the next window's condition frames.
            finished = (next_frame, x.clone()) if i == steps - 1 else None
            cancelled = progress.report(finished)
            if finished is not None:
                first_index, frames = finished
                for j in range(frames.shape[1]):
                    yield first_index + j, frames[:, j]
            if cancelled:
                raise progress.cancelled()
        if condition_frames:
            recent = x if condition is None else torch.cat([condition, x], dim=1)
            condition = recent[:, -condition_frames:]
        next_frame += new_count
        window_index += 1


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
        """Account for one call (and the frames ``(first_index, [B, n, ...])`` it finished);
        return True when the callback asks to stop."""
        self.calls_done += 1
        newest_index = newest = None
        if finished is not None:
            first_index, frames = finished
            self.frames_done += frames.shape[1]
            newest_index, newest = first_index + frames.shape[1] - 1, frames[:, -1]
        if self.callback is None:
            return False
        answer = self.callback(SamplingProgress(
            self.calls_done, self.calls_total, self.frames_done, self.frames_total, newest_index, newest
        ))
        return answer is False

    def cancelled(self) -> SamplingCancelled:
        return SamplingCancelled(self.calls_done, self.frames_done)


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


def _frame_sigmas(values: list[float], batch: int, sigmas: torch.Tensor) -> torch.Tensor:
    """The ``[B, F]`` sigma tensor for the model. Values come from ``sigmas.tolist()``, so they are
    exactly the schedule's entries."""
    return torch.tensor(values, dtype=sigmas.dtype, device=sigmas.device).expand(batch, -1).contiguous()


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


def _resolve_dtype_device(dtype, device, prefix):
    if dtype is None:
        dtype = prefix.dtype if prefix is not None else torch.float32
    if device is None:
        device = prefix.device if prefix is not None else torch.device("cpu")
    return dtype, torch.device(device)


def _prefix_tail(prefix, frame_shape, keep: int, dtype, device):
    """The last ``keep`` prefix frames (a copy: the caller's tensor is never touched) and P."""
    if prefix is None:
        return None, 0
    batch, frames = check_latents(prefix, "prefix")
    if (batch, *prefix.shape[2:]) != tuple(frame_shape):
        raise ValueError(
            f"prefix: expected frames of shape {tuple(frame_shape)} (frame_shape), i.e. "
            f"[{frame_shape[0]}, P, {', '.join(map(str, frame_shape[1:]))}]; found {list(prefix.shape)}"
        )
    if frames == 0:
        return None, 0
    return prefix[:, -keep:].to(device=device, dtype=dtype, copy=True), frames


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
    "SamplingCancelled",
    "SamplingProgress",
    "SamplingPlan",
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
]
