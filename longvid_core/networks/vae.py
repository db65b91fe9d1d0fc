"""SVD's temporal VAE: building it and encoding images to latents (decoding: ``decoding.py``).

The model is diffusers' ``AutoencoderKLTemporalDecoder`` (LDM encoder + SGM "VideoDecoder" whose
resnets and output conv also mix along time). Its weights come from either layout through
:mod:`longvid_core.weights.keymaps.sgm_vae` or a diffusers ``vae/`` folder; see ``loading.py``.

Latent spaces: the VAE itself works in *unscaled* latents; the UNet works in latents multiplied by
:data:`VAE_SCALE`. SVD's concat (conditioning-frame) latent is unscaled, the sampled video latents
are scaled, so :func:`encode_latent_dist_mode` returns unscaled latents and
:func:`longvid_core.networks.decoding.decode` takes scaled ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder

VAE_SCALE = 0.18215


def config_from_json(path) -> dict:
    """The config dict of a diffusers ``vae/config.json`` (for :func:`build_vae`)."""
    with open(Path(path), encoding="utf-8") as fh:
        config = json.load(fh)
    class_name = config.get("_class_name", "AutoencoderKLTemporalDecoder")
    if class_name != "AutoencoderKLTemporalDecoder":
        raise ValueError(
            f"{path}: expected SVD's temporal VAE (_class_name AutoencoderKLTemporalDecoder); found {class_name} "
            "(an image VAE cannot decode SVD video)"
        )
    return config


def build_vae(config: Mapping, device=None, dtype: torch.dtype | None = None) -> AutoencoderKLTemporalDecoder:
    """An ``AutoencoderKLTemporalDecoder`` with the given architecture, in eval mode.

    ``config``: from :func:`longvid_core.weights.keymaps.sgm_vae.config_from_shapes` or a diffusers
    ``vae/config.json`` (:func:`config_from_json`; ``_class_name`` and other bookkeeping entries are
    ignored). ``device="meta"`` builds without allocating, to be filled with ``load_state_dict(...,
    assign=True)``; other devices get diffusers' random initialisation.
    """
    with torch.device(device or "cpu"):
        vae = AutoencoderKLTemporalDecoder.from_config(dict(config))
    # The device context misses the mix_factors (diffusers makes them with the legacy
    # ``torch.Tensor([alpha])``, which always allocates on the CPU), so move everything explicitly.
    # nn.Module.to rather than ModelMixin.to: the latter warns about fp32-kept modules this model has none of.
    torch.nn.Module.to(vae, device=device, dtype=dtype)
    return vae.eval()


def vae_device_dtype(vae: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(vae.parameters())
    return param.device, param.dtype


@torch.no_grad()
def encode_latent_dist_mode(vae: AutoencoderKLTemporalDecoder, images: torch.Tensor,
                            batch_chunk: int | None = None) -> torch.Tensor:
    """Images ``[N, 3, H, W]`` in -1..1 -> the *unscaled* latent posterior mode ``[N, 4, H/8, W/8]``.

    Computed in the VAE's dtype on its device; returned there. ``batch_chunk`` bounds how many images
    go through the encoder at once (the encoder works image by image, so chunking changes nothing).
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected [batch, 3, height, width] in -1..1; found {tuple(images.shape)}")
    device, dtype = vae_device_dtype(vae)
    images = images.to(device=device, dtype=dtype)
    step = batch_chunk or images.shape[0]
    parts = [vae.encode(images[i:i + step]).latent_dist.mode() for i in range(0, images.shape[0], step)]
    return torch.cat(parts)


def vae_downscale(vae) -> int:
    """Pixels per latent pixel of the VAE (8 for SVD's, 2 for the tiny test VAE)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)
