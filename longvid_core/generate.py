"""One entry to every sampler by mode name: what the nodes and the command line both run.

Modes (the same names in the ComfyUI node, ``longvid generate --mode`` and the benchmarks):

- ``progressive`` — PA-VDM progressive rolling sampling (:func:`samplers.iter_progressive`),
  window of ``window`` noisy frames in chunks of ``chunk``.
- ``full_sequence`` — one clip, all frames at one noise level (ordinary SVD/ExSVD sampling).
- ``replacement_without_noise`` / ``replacement_with_noise`` — autoregressive windows of
  ``window + chunk`` frames whose first ``chunk`` frames are the previous window's last frames,
  held clean or re-noised (PA-VDM Sec. 2.2). The same frames per call as the progressive sampler,
  so the comparison is fair.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from . import samplers
from .schedules import get_sigmas_karras

PROGRESSIVE = "progressive"
FULL_SEQUENCE = "full_sequence"
REPLACEMENT_WITHOUT_NOISE = "replacement_without_noise"
REPLACEMENT_WITH_NOISE = "replacement_with_noise"
MODES = (PROGRESSIVE, FULL_SEQUENCE, REPLACEMENT_WITHOUT_NOISE, REPLACEMENT_WITH_NOISE)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}; found {mode!r}")


def plan_sampling(mode: str, total_frames: int, *, window: int, chunk: int, steps: int,
                  prefix_frames: int = 0) -> samplers.SamplingPlan:
    """Exact cost of :func:`iter_sampling` before it starts (``total_frames`` includes the prefix)."""
    _check_mode(mode)
    if mode == PROGRESSIVE:
        return samplers.plan_progressive(total_frames, window=window, chunk=chunk, steps=steps,
                                         prefix_frames=prefix_frames)
    if mode == FULL_SEQUENCE:
        return samplers.plan_full_sequence(total_frames, steps=steps)
    return samplers.plan_replacement(total_frames, window=window + chunk, condition_frames=chunk, steps=steps,
                                     prefix_frames=prefix_frames)


def iter_sampling(mode: str, denoise, cond, total_frames: int, frame_shape, *, window: int, chunk: int, steps: int,
                  cfg: float, min_cfg: float, seed: int, prefix: torch.Tensor | None = None,
                  context_sigma: float | None = None, callback: Callable | None = None,
                  device=None) -> Iterator[tuple[int, torch.Tensor]]:
    """The sampler of ``mode`` as a stream of finished ``(frame_index, latent[B,4,h,w])``.

    ``cond``: one SVDCond or keyframes ``[(start_frame, SVDCond), ...]``; ``prefix``: scaled
    latents ``[B, P, 4, h, w]`` to extend (not for ``full_sequence``). Karras sigmas, SVD's range.
    ``context_sigma``: progressive mode's context noise (:func:`samplers.iter_progressive`), for
    models trained with it; ``None`` gives the clean chunk clean. The baselines ignore it: they are
    PA-VDM's reference samplers and stay as published.
    """
    _check_mode(mode)
    if mode == FULL_SEQUENCE and prefix is not None:
        raise ValueError("full_sequence mode cannot extend a video; use progressive or a replacement mode")
    sigmas = get_sigmas_karras(steps, device=device)
    common = dict(seed=seed, cfg=cfg, min_cfg=min_cfg, callback=callback, dtype=torch.float32, device=device)
    if mode == PROGRESSIVE:
        return samplers.iter_progressive(denoise, cond, total_frames, frame_shape, sigmas, window=window,
                                         chunk=chunk, prefix=prefix, context_sigma=context_sigma, **common)
    if mode == FULL_SEQUENCE:
        return samplers.iter_full_sequence(denoise, cond, total_frames, frame_shape, sigmas, **common)
    return samplers.iter_replacement(denoise, cond, total_frames, frame_shape, sigmas, window=window + chunk,
                                     condition_frames=chunk, renoise_condition=mode == REPLACEMENT_WITH_NOISE,
                                     prefix=prefix, **common)
