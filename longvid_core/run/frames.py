"""Pixel frames in, latents out: fitting images to the video size and encoding video frames.

The fitting rule (:func:`cover_crop`) is the one ComfyUI's SVD conditioning applies
(``comfy.utils.common_upscale(..., "center")``): cut the largest centred region with the target
aspect ratio out of the image, then resize it to exactly ``width x height``. Nothing is stretched
and nothing is padded; what sticks out on the long side is cut off equally on both ends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..networks.vae import VAE_SCALE, encode_latent_dist_mode, vae_downscale
from ..shapes import check_image


def cover_crop(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, 3]`` (0..1) -> ``[B, height, width, 3]``: centre-crop to the target
    aspect ratio, then resize (bilinear, antialiased when shrinking). Returned unchanged (same
    tensor) when it already has the target size."""
    check_image(images, multiple=1)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive; got {width}x{height}")
    _, old_h, old_w, _ = images.shape
    if (old_h, old_w) == (height, width):
        return images
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:  # too wide: cut left and right
        x = round((old_w - old_w * (new_aspect / old_aspect)) / 2)
    elif old_aspect < new_aspect:  # too tall: cut top and bottom
        y = round((old_h - old_h * (old_aspect / new_aspect)) / 2)
    crop = images[:, y:old_h - y, x:old_w - x].permute(0, 3, 1, 2).float()
    shrinking = crop.shape[-1] > width or crop.shape[-2] > height
    resized = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False, antialias=shrinking)
    return resized.clamp(0.0, 1.0).permute(0, 2, 3, 1).to(images.dtype)


@torch.no_grad()
def encode_frames(vae, frames: torch.Tensor, batch_chunk: int = 8) -> torch.Tensor:
    """Video frames ``[F, H, W, 3]`` (ComfyUI IMAGE, 0..1) -> scaled latents ``[1, F, 4, H/8, W/8]``,
    the form samplers take as ``prefix`` ("extend this video").

    SVD's VAE encoder works frame by frame (only its decoder is temporal), so frames are encoded
    ``batch_chunk`` at a time without changing the result. Posterior mode, times ``VAE_SCALE``.
    """
    check_image(frames, multiple=vae_downscale(vae), name="frames")
    latents = []
    for start in range(0, frames.shape[0], batch_chunk):
        pixels = frames[start:start + batch_chunk].permute(0, 3, 1, 2).float() * 2.0 - 1.0
        latents.append(encode_latent_dist_mode(vae, pixels).float() * VAE_SCALE)
    return torch.cat(latents).unsqueeze(0)


__all__ = ["cover_crop", "encode_frames"]
