"""Step rules: how one step moves the noisy frames of a call down the schedule.

A step rule knows nothing of windows or frames in a video: ``step(model, x, sigma, sigma_next)``
gets the noisy frames of one call and a ``model(x, sigma) -> x0`` that runs the (guided) denoiser
with the call's context, and returns the frames one step on (k-diffusion's ``sampling.py`` manner).
A new rule (Heun, DPM++) is one function and one :class:`StepRule`; the walks take any of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


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


def _broadcast_frames(sigma, x: torch.Tensor):
    if not isinstance(sigma, torch.Tensor) or sigma.dim() == 0:
        return sigma
    sigma = sigma.to(device=x.device, dtype=x.dtype)
    if sigma.dim() == 1:
        sigma = sigma[None]
    return sigma[:, :, None, None, None]


__all__ = ["EULER", "ModelFn", "StepRule", "euler_step"]
