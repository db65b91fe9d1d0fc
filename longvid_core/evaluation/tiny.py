"""Tiny random SVD models: a few dozen channels, the real architecture and file layouts.

Used by the smoke run (``python -m longvid_core smoke``), the tests and the benchmarks, so
everything that needs "an SVD" runs in seconds on a CPU without downloaded weights.
"""

from __future__ import annotations

import torch

TINY_UNET = dict(
    in_channels=8,
    out_channels=4,
    block_out_channels=(64, 128),
    layers_per_block=1,
    down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
    up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
    cross_attention_dim=32,
    transformer_layers_per_block=1,
    num_attention_heads=(1, 2),
    addition_time_embed_dim=8,
    projection_class_embeddings_input_dim=24,
)
# Two levels (one downsample), 32 and 64 channels: has nin_shortcuts in encoder and decoder like
# the real VAE. Channels are multiples of 32 because diffusers' GroupNorms use 32 groups.
TINY_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=2,
    latent_channels=4,
)
# 224x224 input (what clip_preprocess produces) in 7x7 patches of 32 pixels; one head of 64.
TINY_CLIP = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=1,
    num_channels=3,
    image_size=224,
    patch_size=32,
    projection_dim=32,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
)


def randomize_(module: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Give every parameter non-trivial values (diffusers zero-initialises some layers, which would
    hide key-map mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.dim() == 1 and ("norm" in name or "layer_norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + scale * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=gen))
    return module


def tiny_unet(seed: int = 0, **overrides):
    from ..networks.unet import LongVidUNet

    torch.manual_seed(seed)
    return randomize_(LongVidUNet(**{**TINY_UNET, **overrides}), seed).eval()


def tiny_vae(seed: int = 0):
    from ..networks.vae import build_vae

    vae = randomize_(build_vae(TINY_VAE), seed)
    with torch.no_grad():  # the SGM layout has no quant_conv: only the identity is representable
        vae.quant_conv.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))
        vae.quant_conv.bias.zero_()
    return vae.eval()


def tiny_clip(seed: int = 0):
    from ..networks.image_encoder import build_image_encoder

    return randomize_(build_image_encoder(TINY_CLIP), seed).eval()


def tiny_svd(seed: int = 0):
    """A tiny random SVD model (UNet, temporal VAE, image encoder) as an SVDModel."""
    from ..networks.model import SVDModel

    model = SVDModel(tiny_unet(seed), tiny_vae(seed + 1), tiny_clip(seed + 2), source="tiny")
    for part in (model.unet, model.vae, model.image_encoder):
        part.requires_grad_(False)
    return model
