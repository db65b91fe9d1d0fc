"""The one place that checks tensor shapes at LongVid's boundaries.

Every check raises ``ValueError`` saying what was expected and what was found.
"""

from __future__ import annotations

import torch


def _fmt(t) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, torch.Tensor) else repr(t)


def nearest_multiples(value: int, multiple: int) -> str:
    """The positive multiples of ``multiple`` either side of ``value``, for "use X or Y" messages."""
    below = value // multiple * multiple
    return " or ".join(str(v) for v in (below, below + multiple) if v > 0)


def check_latents(x: torch.Tensor, name: str = "latents", channels: int | None = None) -> tuple[int, int]:
    """``x`` must be ``[B, F, C, h, w]``; returns ``(B, F)``."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        raise ValueError(f"{name}: expected a tensor [batch, frames, channels, height, width]; found {_fmt(x)}")
    if channels is not None and x.shape[2] != channels:
        raise ValueError(f"{name}: expected {channels} channels; found shape {_fmt(x)}")
    return x.shape[0], x.shape[1]


def per_frame_sigma(sigma, batch: int, frames: int, device=None) -> torch.Tensor:
    """Broadcast a scalar, ``[B]`` or ``[B, F]`` noise level to ``[B, F]`` float32."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=device)
    if sigma.dim() == 0:
        sigma = sigma.expand(batch)
    if sigma.dim() == 1:
        if sigma.shape[0] != batch:
            raise ValueError(f"sigma: expected [batch={batch}] or [batch, frames={frames}]; found {_fmt(sigma)}")
        sigma = sigma[:, None].expand(batch, frames)
    if sigma.shape != (batch, frames):
        raise ValueError(f"sigma: expected [batch={batch}, frames={frames}]; found {_fmt(sigma)}")
    return sigma


def check_unet_inputs(sample, timestep, encoder_hidden_states, added_time_ids):
    """Normalise UNet inputs to per-frame form: timestep ``[B, F]``, context ``[B, F, T, D]``,
    time ids ``[B, F, n]``."""
    batch, frames = check_latents(sample, "sample")
    timestep = per_frame_sigma(timestep, batch, frames, sample.device)
    ctx = encoder_hidden_states
    if ctx.dim() == 3:
        ctx = ctx[:, None].expand(-1, frames, -1, -1)
    if ctx.dim() != 4 or ctx.shape[:2] != (batch, frames):
        raise ValueError(
            f"encoder_hidden_states: expected [batch={batch}, tokens, dim] or [batch, frames={frames}, tokens, dim]; "
            f"found {_fmt(encoder_hidden_states)}"
        )
    ids = added_time_ids
    if ids.dim() == 2:
        ids = ids[:, None].expand(-1, frames, -1)
    if ids.dim() != 3 or ids.shape[:2] != (batch, frames):
        raise ValueError(
            f"added_time_ids: expected [batch={batch}, n] or [batch, frames={frames}, n]; found {_fmt(added_time_ids)}"
        )
    return timestep, ctx, ids


def check_image(image: torch.Tensor, multiple: int = 8, name: str = "image") -> tuple[int, int, int]:
    """``image`` must be ``[B, H, W, 3]`` floats in 0..1 (ComfyUI's IMAGE) with H, W multiples of
    ``multiple``; returns ``(B, H, W)``."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] != 3:
        raise ValueError(f"{name}: expected [batch, height, width, 3] (ComfyUI IMAGE); found {_fmt(image)}")
    if not image.is_floating_point():
        raise ValueError(f"{name}: expected float values in 0..1; found dtype {image.dtype}")
    _, h, w, _ = image.shape
    if h % multiple or w % multiple:
        raise ValueError(f"{name}: expected height and width that are multiples of {multiple}; found {h}x{w}")
    return image.shape[0], h, w
