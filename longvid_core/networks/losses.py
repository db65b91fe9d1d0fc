"""Training loss for SVD's EDM denoiser, with a noise level per frame.

Shared by the trainer (``training/train.py``) and anything else that measures how well a model
denoises (benchmarks, evaluation). The model side is the denoiser contract of
:mod:`longvid_core.networks.denoiser`: ``denoise(x[B,F,4,h,w], sigma[B,F], cond) -> x0``, SVD's v-prediction
with sigma_data = 1 and its EDM preconditioning.

The loss is the x0 (denoised) error, weighted per frame by a function of that frame's sigma:

- ``"edm"``: ``lambda(sigma) = (sigma^2 + 1) / sigma^2`` (Karras et al. 2022, Table 1, with
  sigma_data = 1). With SVD's ``c_out = -sigma / sqrt(sigma^2 + 1)`` this makes the weighted x0
  error *equal* to the plain squared error of the network's raw output against its ideal output,
  so every noise level contributes on the same scale. It is SGM's weighting for SVD's
  v-prediction (``VWeighting``: EDM's with sigma_data = 1), and the default.
- ``"exvideo"``: ``sqrt(sigma^2 + 1) / sigma``, the square root of the above, which ExVideo's
  post-tuning script used (x0 MSE times ``sqrt(1 + sigma^2)/sigma``). It down-weights low noise
  levels relative to EDM's weighting; offered to reproduce ExVideo.
- ``"unit"``: plain x0 MSE (dominated by high noise levels; for diagnostics).

Frames given to the model *clean*, only as conditioning (PA-VDM's overlapped conditioning chunk,
Sec. 3.4), are passed in unchanged at their (small, positive) sigma and excluded from the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..shapes import check_latents, per_frame_sigma
from .conditioning import SVDCond

LOSS_WEIGHTINGS = ("edm", "exvideo", "unit")


def loss_weight(sigma: torch.Tensor, weighting: str = "edm") -> torch.Tensor:
    """Per-frame weight of the squared x0 error at noise level ``sigma`` (see module doc)."""
    sigma = sigma.to(torch.float32)
    if weighting == "edm":
        return (sigma**2 + 1.0) / sigma**2
    if weighting == "exvideo":
        return torch.sqrt(sigma**2 + 1.0) / sigma
    if weighting == "unit":
        return torch.ones_like(sigma)
    raise ValueError(f"loss weighting must be one of {LOSS_WEIGHTINGS}; found {weighting!r}")


def noisy_input(x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                conditioning_frames: torch.Tensor | None = None, noise_conditioning: bool = False) -> torch.Tensor:
    """``x0 + sigma * noise`` per frame (EDM's forward process: x = y + sigma n); frames marked in
    ``conditioning_frames [B, F]`` stay exactly ``x0`` (given clean, as the sampler gives them),
    unless ``noise_conditioning`` (context noise: they are noised at their sigma like the rest)."""
    x = x0 + sigma.to(x0.dtype)[..., None, None, None] * noise.to(x0.dtype)
    if conditioning_frames is not None and not noise_conditioning:
        x = torch.where(conditioning_frames[..., None, None, None], x0, x)
    return x


@dataclass(frozen=True)
class DenoisingLoss:
    """``loss``: the scalar to optimise (mean weighted error over the frames that count);
    ``per_frame``: the weighted error of every frame ``[B, F]`` (0 where masked), detached;
    ``frames``: how many frames counted."""

    loss: torch.Tensor
    per_frame: torch.Tensor
    frames: int


def edm_denoising_loss(
    denoise: Callable[[torch.Tensor, torch.Tensor, SVDCond], torch.Tensor],
    x0: torch.Tensor,
    sigma,
    noise: torch.Tensor,
    cond: SVDCond,
    *,
    conditioning_frames: torch.Tensor | None = None,
    noise_conditioning: bool = False,
    weighting: str = "edm",
) -> DenoisingLoss:
    """EDM denoising loss of ``denoise`` on clean latents ``x0 [B, F, 4, h, w]`` (VAE-scaled).

    ``sigma``: scalar, ``[B]`` or ``[B, F]`` (one level per frame, e.g. progressive levels).
    ``noise``: standard normal, shaped like ``x0``. ``conditioning_frames``: optional bool
    ``[B, F]``; those frames go in clean (or, with ``noise_conditioning``, noised at their sigma)
    and do not count. The loss is the mean over counted frames
    of ``loss_weight(sigma) * mean((denoise(x) - x0)^2)`` (mean over channels and pixels), computed
    in float32.
    """
    batch, frames = check_latents(x0, "x0")
    if noise.shape != x0.shape:
        raise ValueError(f"noise: expected the shape of x0 {tuple(x0.shape)}; found {tuple(noise.shape)}")
    sigma = per_frame_sigma(sigma, batch, frames, x0.device)
    counted = torch.ones(batch, frames, dtype=torch.bool, device=x0.device)
    if conditioning_frames is not None:
        conditioning_frames = conditioning_frames.to(device=x0.device, dtype=torch.bool)
        if conditioning_frames.shape != (batch, frames):
            raise ValueError(
                f"conditioning_frames: expected a bool mask [batch={batch}, frames={frames}]; "
                f"found {tuple(conditioning_frames.shape)}"
            )
        counted = ~conditioning_frames
    x = noisy_input(x0.float(), sigma, noise.float(), conditioning_frames, noise_conditioning)
    return weighted_x0_loss(denoise(x, sigma, cond), x0, sigma, counted, weighting)


def weighted_x0_loss(denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, counted: torch.Tensor,
                     weighting: str = "edm") -> DenoisingLoss:
    """Mean over the ``counted [B, F]`` frames of ``loss_weight(sigma) * mean((denoised - x0)^2)``, in
    float32: the loss of :func:`edm_denoising_loss` for a prediction made from any noisy input (the
    rollout batches of ``training/rollout.py`` give the model its own sampler state, not ``x0 + noise``)."""
    frames_counted = int(counted.sum().item())
    if frames_counted == 0:
        raise ValueError("every frame is a conditioning frame: nothing to compute a loss on")
    error = (denoised.float() - x0.float()).square().mean(dim=(2, 3, 4))
    weighted = loss_weight(sigma, weighting) * error * counted
    return DenoisingLoss(loss=weighted.sum() / frames_counted, per_frame=weighted.detach(), frames=frames_counted)


__all__ = ["LOSS_WEIGHTINGS", "loss_weight", "noisy_input", "DenoisingLoss", "edm_denoising_loss", "weighted_x0_loss"]
