"""The LONGVID_MODEL object and the small cache that reuses loaded models across runs.

Memory: inside ComfyUI each part (UNet, VAE, image encoder) is wrapped in a ComfyUI
``ModelPatcher`` and moved onto the GPU through ``comfy.model_management.load_models_gpu`` right
before use. That registers the weights with ComfyUI's memory manager, the same hook core models
use: when another model needs the room, when "Unload models" / ``POST /free`` is asked for, the
manager moves our weights back to the offload device (CPU RAM) like any core model. The cache
below then holds them only in CPU RAM, and at most :data:`CACHE_SIZE` models.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from longvid_core import load_svd
from longvid_core.weights.loading import resolve_dtype

from . import runtime

CACHE_SIZE = 1  # full SVD-XT weights are ~4 GB in fp16: keep one loaded model
DTYPE_CHOICES = ["auto", "fp32", "fp16", "bf16"]


class _Holder(torch.nn.Module):
    """Gives a ModelPatcher a plain module to manage: it sets ``.device`` on what it manages, which
    diffusers models expose read-only."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module


# One class per part, so ComfyUI's log says what it loads ("Requested to load LongVidUNetWeights").
class LongVidUNetWeights(_Holder):
    pass


class LongVidVAEWeights(_Holder):
    pass


class LongVidImageEncoderWeights(_Holder):
    pass


_HOLDERS = {"unet": LongVidUNetWeights, "vae": LongVidVAEWeights, "image_encoder": LongVidImageEncoderWeights}


@dataclass(eq=False)
class LongVidModel:
    """What flows along a LONGVID_MODEL socket: a loaded SVD/ExSVD and how to put it on the device."""

    svd: object  # longvid_core.SVDModel
    name: str
    extension: str | None
    device: torch.device
    dtype: torch.dtype
    patchers: dict = field(default_factory=dict)  # part name -> ComfyUI ModelPatcher (inside ComfyUI)
    lora: str | None = None  # "file name at strength", merged into the weights

    def prepare(self, *parts: str):
        """Put ``parts`` ("unet", "vae", "image_encoder") on the compute device; returns the SVDModel."""
        runtime.load_models_on_device([self.patchers[p] for p in parts if p in self.patchers])
        return self.svd

    @property
    def max_frames(self) -> int | None:
        """The longest clip one call may hold (an ExVideo table's length); None for plain SVD."""
        return self.svd.max_frames

    def describe(self) -> str:
        ext = f" + {self.extension} ({self.max_frames} frames)" if self.extension else " (plain SVD, 25-frame clips)"
        lora = f" + LoRA {self.lora}" if self.lora else ""
        return f"{self.name}{ext}{lora}, {str(self.dtype).replace('torch.', '')} on {self.device}"


_cache: "OrderedDict[tuple, LongVidModel]" = OrderedDict()


def _stamp(path: Path | None):
    if path is None:
        return None
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def cache_key(checkpoint: Path, extension: Path | None, dtype: torch.dtype, device: torch.device,
              lora: Path | None = None, lora_strength: float = 1.0) -> tuple:
    """Same files (path, modification time, size), LoRA strength, dtype and device -> same loaded model."""
    return (_stamp(checkpoint), _stamp(extension), _stamp(lora), float(lora_strength) if lora else None, str(dtype),
            str(device))


def load_model(checkpoint: Path, extension: Path | None, dtype_choice: str, lora: Path | None = None,
               lora_strength: float = 1.0, compile_unet: bool = False) -> LongVidModel:
    """A cached or freshly loaded LongVidModel (``compile_unet``: torch.compile, eager fallback)."""
    if dtype_choice not in DTYPE_CHOICES:
        raise ValueError(f"dtype must be one of {DTYPE_CHOICES}; got {dtype_choice!r}")
    device = runtime.torch_device()
    dtype = runtime.auto_dtype(device) if dtype_choice == "auto" else resolve_dtype(dtype_choice)
    key = cache_key(checkpoint, extension, dtype, device, lora, lora_strength) + (bool(compile_unet),)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    while len(_cache) >= CACHE_SIZE:  # drop before loading: two full models need not fit at once
        _cache.popitem(last=False)
    load_device = runtime.offload_device() if runtime.IN_COMFYUI else device
    svd = load_svd(checkpoint, extension=extension, device=load_device, dtype=dtype, lora=lora,
                   lora_strength=lora_strength, compile=bool(compile_unet))
    for warning in svd.warnings:  # ComfyUI's console and log
        logging.warning("LongVid: %s", warning)
    model = LongVidModel(
        svd=svd,
        name=checkpoint.name,
        extension=None if extension is None else f"{extension.parent.name}/{extension.name}",
        device=device,
        dtype=dtype,
        patchers=_patchers(svd, device, load_device),
        lora=None if lora is None else f"{lora.name} at {lora_strength:g}",
    )
    _cache[key] = model
    return model


def _patchers(svd, device, offload) -> dict:
    if not runtime.IN_COMFYUI:
        return {}
    from comfy.model_patcher import ModelPatcher

    return {
        part: ModelPatcher(holder(getattr(svd, part)), load_device=device, offload_device=offload)
        for part, holder in _HOLDERS.items()
    }


def clear_cache() -> None:
    """Forget every cached model (the next load reads the files again)."""
    _cache.clear()


def cached_models() -> list[LongVidModel]:
    return list(_cache.values())
