"""Test helpers: tiny SVD models (from longvid_core.tiny) written in the real file layouts."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from longvid_core.tiny import TINY_CLIP, TINY_UNET, TINY_VAE, randomize_, tiny_clip, tiny_svd, tiny_unet, tiny_vae  # noqa: F401

def unet_inputs(batch=2, frames=5, h=8, w=8, seed=1, cross=32, n_ids=3):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, frames, 8, h, w, generator=gen)
    context = torch.randn(batch, 1, cross, generator=gen)
    time_ids = torch.tensor([[5.0, 127.0, 0.02]] * batch)
    return sample, context, time_ids


KEYS_SHAPES = Path(__file__).resolve().parent / "data" / "svd_xt_keys_shapes.txt"


def shapes_of(state) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items()}


def real_file_shapes(prefix: str = "") -> dict[str, tuple]:
    """Names and shapes of the real svd_xt.safetensors (tests/data/svd_xt_keys_shapes.txt: the tensor
    names and shapes of the released file, one per line)."""
    out = {}
    for line in KEYS_SHAPES.read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            out[key[len(prefix):]] = tuple(ast.literal_eval(shape))
    return out


def write_tiny_sgm(path, seed: int = 0, extra: dict | None = None):
    """Write a tiny SVD as an SGM single file, with the real file's unused leftovers."""
    from safetensors.torch import save_file

    state = tiny_svd(seed).sgm_state_dict()
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
