"""``SVDModel``: the loaded SVD / ExSVD (UNet, temporal VAE, image encoder) and what it can run.

``encode_image`` / ``denoise`` / ``decode`` are the three model steps of the data flow
images -> conditioning -> sampler over ``denoise`` -> latents -> ``decode`` -> frames. The limits a
generation run must respect before it starts (clip length, picture size) are read here.
"""

from __future__ import annotations

import torch

from ..shapes import per_frame_sigma
from . import decoding, exvideo
from .conditioning import SVDCond, encode_image
from .denoiser import svd_denoise
from .vae import vae_downscale


class SVDModel:
    """An SVD (or ExSVD) model ready for sampling."""

    def __init__(self, unet, vae, image_encoder, source: str = "", trained_for=None):
        self.unet = unet
        self.vae = vae
        self.image_encoder = image_encoder
        self.source = source
        # what LongVid's trainer recorded in the file (weights.trained_for.TrainedFor); None for others
        self.trained_for = trained_for
        self.base_identity: dict | None = None  # the base weights' content identity (base_identity.py)
        self.warnings: list[str] = []  # what a user should see about this load (the nodes log them, the CLI prints)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def max_frames(self) -> int | None:
        """The longest clip one call may hold: an ExVideo extension's table length; None for plain SVD."""
        return exvideo.max_frames(self.unet)

    @property
    def trained_frames(self) -> int:
        """The clip length the model was trained on (the table, or SVD-XT's 25 frames)."""
        return self.max_frames or exvideo.SVD_TRAINED_FRAMES

    @property
    def size_multiple(self) -> int:
        """Width and height must be multiples of this (64 for SVD: 8x VAE, then the UNet halves 3 times)."""
        return vae_downscale(self.vae) * 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def min_size(self) -> int:
        """The smallest width/height: ExVideo's 3-D conv needs 2x2 latent pixels at the deepest level."""
        return self.size_multiple * (2 if self.max_frames is not None else 1)

    def to(self, device=None, dtype=None) -> "SVDModel":
        for part in (self.unet, self.vae, self.image_encoder):
            part.to(device=device, dtype=dtype)
        return self

    def denoise(self, x: torch.Tensor, sigma, cond: SVDCond, **unet_options):
        """``denoise(x[B,F,4,h,w], sigma[B,F] or [B], cond) -> x0[B,F,4,h,w]``, for any F >= 1.

        ExVideo's reflect-padded conv cannot take one frame, so an extended model sees a 1-frame
        clip (the progressive sampler's first calls at chunk 1, a 1-frame video) as that frame twice.
        ``unet_options``: deep-feature reuse (:func:`~longvid_core.networks.denoiser.svd_denoise`).
        """
        if x.dim() == 5 and x.shape[1] == 1 and self.max_frames is not None:
            sigma = per_frame_sigma(sigma, x.shape[0], 1, x.device).expand(-1, 2)
            if cond.per_frame:
                one = cond.expand_frames(1)
                cond = SVDCond(one.image_embeds.expand(-1, 2, -1, -1), one.concat_latent.expand(-1, 2, -1, -1, -1),
                               one.added_time_ids)
            out = svd_denoise(self.unet, x.expand(-1, 2, -1, -1, -1), sigma, cond, **unet_options)
            return (out[0][:, :1], out[1]) if isinstance(out, tuple) else out[:, :1]
        return svd_denoise(self.unet, x, sigma, cond, **unet_options)

    def encode_image(self, image, fps: int = 6, motion_bucket_id: int = 127, noise_aug_strength: float = 0.02,
                     seed: int = 0) -> SVDCond:
        return encode_image(self.image_encoder, self.vae, image, fps=fps, motion_bucket_id=motion_bucket_id,
                            noise_aug_strength=noise_aug_strength, seed=seed)

    def decode(self, latents: torch.Tensor, **kwargs) -> torch.Tensor:
        """Scaled latents ``[B, F, 4, h, w]`` -> frames ``[B, F, H, W, 3]`` (:func:`decoding.decode`)."""
        return decoding.decode(self.vae, latents, **kwargs)


__all__ = ["SVDModel"]
