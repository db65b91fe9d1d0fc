"""Classifier-free guidance per frame, on SVD's linear ramp over the frames of a window."""

from __future__ import annotations

from typing import Callable

import torch

from ..networks.conditioning import SVDCond

Denoiser = Callable[[torch.Tensor, torch.Tensor, SVDCond], torch.Tensor]

# SVD's image-to-video defaults (ComfyUI's template: VideoLinearCFGGuidance min_cfg 1.0, cfg 2.5).
DEFAULT_CFG = 2.5
DEFAULT_MIN_CFG = 1.0


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


__all__ = ["DEFAULT_CFG", "DEFAULT_MIN_CFG", "Denoiser", "guided_denoise", "linear_cfg_ramp"]
