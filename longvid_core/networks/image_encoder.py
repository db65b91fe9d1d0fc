"""SVD's image encoder: OpenCLIP ViT-H/14 image tower as transformers' ``CLIPVisionModelWithProjection``.

SVD cross-attends to one token: the projected, pooled CLIP embedding of the conditioning image.
Its preprocessing is SGM's (``FrozenOpenCLIPImageEmbedder.preprocess``, reproduced by diffusers'
``StableVideoDiffusionPipeline._encode_image``): the whole image is squashed to 224x224 with an
antialiased bicubic resize (no crop, aspect ratio not kept), then CLIP-normalised. ComfyUI's
CLIP-vision node crops to the centre instead; LongVid follows the model's training code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from ..shapes import check_image

CLIP_INPUT_SIZE = (224, 224)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def config_from_json(path) -> dict:
    """``CLIPVisionConfig`` kwargs from a diffusers ``image_encoder/config.json``."""
    with open(Path(path), encoding="utf-8") as fh:
        config = json.load(fh)
    model_type = config.get("model_type", "clip_vision_model")
    if model_type != "clip_vision_model":
        raise ValueError(f"{path}: expected a CLIP vision config (model_type clip_vision_model); found {model_type}")
    return config


def build_image_encoder(config_kwargs: Mapping, device=None,
                        dtype: torch.dtype | None = None) -> CLIPVisionModelWithProjection:
    """A ``CLIPVisionModelWithProjection`` with the given architecture, in eval mode.

    ``config_kwargs``: from :func:`longvid_core.weights.keymaps.sgm_clip.config_from_shapes` or a diffusers
    ``image_encoder/config.json`` (:func:`config_from_json`). ``device="meta"`` builds without
    allocating; the non-persistent ``position_ids`` buffer must then be rebuilt after loading.
    """
    # A config.json's torch_dtype would make transformers build in that dtype; the caller's dtype decides.
    kwargs = {k: v for k, v in config_kwargs.items() if k not in ("torch_dtype", "dtype")}
    config = CLIPVisionConfig.from_dict(kwargs)
    with torch.device(device or "cpu"):
        encoder = CLIPVisionModelWithProjection(config)
    encoder.to(device=device, dtype=dtype)
    return encoder.eval()


def _gaussian_blur_1d(x: torch.Tensor, kernel_size: int, sigma: float, dim: int) -> torch.Tensor:
    """Blur ``[N, C, H, W]`` along H (dim=-2) or W (dim=-1), reflecting at the borders."""
    taps = torch.arange(kernel_size, dtype=x.dtype, device=x.device) - kernel_size // 2
    kernel = torch.exp(-taps.pow(2) / (2.0 * sigma**2))
    kernel = kernel / kernel.sum()
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    pad = kernel_size // 2
    if dim == -2:
        flat = F.pad(flat, (0, 0, pad, pad), mode="reflect")
        weight = kernel.view(1, 1, kernel_size, 1)
    else:
        flat = F.pad(flat, (pad, pad, 0, 0), mode="reflect")
        weight = kernel.view(1, 1, 1, kernel_size)
    return F.conv2d(flat, weight).reshape(n, c, h, w)


def antialiased_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, C, *size]``: Gaussian pre-blur, then bicubic with align_corners=True.

    This is kornia's ``resize(..., antialias=True)``, which SGM's OpenCLIP embedder calls and
    diffusers' ``_resize_with_antialiasing`` reimplements: sigma = (scale - 1) / 2 per axis
    (skimage's rule; 0.001, i.e. no blur, when enlarging), kernel spanning +-2 sigma, at least 3
    taps and odd. ``F.interpolate(..., antialias=True)`` is a different filter (and
    align_corners=False) and does not match SVD's training preprocessing.
    """
    h, w = x.shape[-2:]
    for dim, (src, dst) in ((-1, (w, size[1])), (-2, (h, size[0]))):
        sigma = max((src / dst - 1.0) / 2.0, 0.001)
        kernel_size = int(max(4.0 * sigma, 3))
        kernel_size += 1 - kernel_size % 2
        x = _gaussian_blur_1d(x, kernel_size, sigma, dim)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=True)


def clip_preprocess(image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE ``[B, H, W, 3]`` in 0..1 -> CLIP ``pixel_values [B, 3, 224, 224]`` (float32,
    same device), following SVD: antialiased resize of the whole image, then CLIP normalisation."""
    check_image(image, multiple=1)
    x = image.float().permute(0, 3, 1, 2)
    # As SGM and diffusers do: resize in -1..1 and map back (the filters are linear with weights
    # summing to one, so this only matters at float rounding level).
    x = (antialiased_resize(x * 2.0 - 1.0, CLIP_INPUT_SIZE) + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def embed_image(encoder: CLIPVisionModelWithProjection, pixel_values: torch.Tensor) -> torch.Tensor:
    """CLIP ``pixel_values [B, 3, 224, 224]`` -> SVD's ``image_embeds [B, 1, D]`` (projected pooled
    output, one cross-attention token), in the encoder's dtype on its device."""
    param = next(encoder.parameters())
    pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
    return encoder(pixel_values=pixel_values).image_embeds.unsqueeze(1)
