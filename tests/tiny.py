"""Test helpers: tiny SVD models (from longvid_core.evaluation.tiny) written in the real file layouts."""

from __future__ import annotations

from pathlib import Path

import torch

from longvid_core.evaluation.tiny import (TINY_CLIP, TINY_UNET, TINY_VAE, randomize_, tiny_clip,  # noqa: F401
                                         tiny_svd, tiny_unet, tiny_vae)
from longvid_core.weights.loading import sgm_state_dict


def unet_inputs(batch=2, frames=5, h=8, w=8, seed=1, cross=32, n_ids=3):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, frames, 8, h, w, generator=gen)
    context = torch.randn(batch, 1, cross, generator=gen)
    time_ids = torch.tensor([[5.0, 127.0, 0.02]] * batch)
    return sample, context, time_ids


from training.memory import KEYS_SHAPES  # noqa: E402  (the released file's names and shapes)
from training.memory import released_shapes as real_file_shapes  # noqa: E402,F401


def shapes_of(state) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


def write_training_data(root: Path, suffixes=(".mp4", ".webm", ".mov")):
    """What a tiny training run reads: ``(root, base, videos)`` with a tiny SVD base file and one
    10-frame 40x32 synthetic video per suffix in ``root/videos``."""
    from training.smoke import write_synthetic_video, write_tiny_base

    videos = root / "videos"
    videos.mkdir()
    for number, suffix in enumerate(suffixes):
        write_synthetic_video(videos / f"clip{number}{suffix}", frames=10, height=32, width=40, seed=number)
    return root, write_tiny_base(root / "svd_tiny.safetensors"), videos


def write_tiny_sgm(path, seed: int = 0, extra: dict | None = None):
    """Write a tiny SVD as an SGM single file, with the real file's unused leftovers."""
    from safetensors.torch import save_file

    state = sgm_state_dict(tiny_svd(seed))
    # leftovers real files carry and loaders must ignore
    state["conditioner.embedders.0.open_clip.model.logit_scale"] = torch.tensor(4.6)
    state["conditioner.embedders.0.open_clip.model.ln_final.weight"] = torch.ones(8)
    state["conditioner.embedders.3.encoder.encoder.conv_in.weight"] = torch.zeros(4, 3, 3, 3)
    state.update(extra or {})
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def write_tiny_diffusers(folder, seed: int = 0, fp16_variant: bool = False):
    """Write a tiny SVD as a diffusers folder (unet/, vae/, image_encoder/)."""
    from pathlib import Path as _P

    folder = _P(folder)
    model = tiny_svd(seed)
    variant = "fp16" if fp16_variant else None
    model.unet.save_pretrained(folder / "unet", variant=variant)
    model.vae.save_pretrained(folder / "vae", variant=variant)
    model.image_encoder.save_pretrained(folder / "image_encoder", variant=variant)
    return folder
