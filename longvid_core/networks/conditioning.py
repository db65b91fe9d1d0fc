"""SVD conditioning: the ``cond`` object of the denoiser contract.

Every sampler calls ``denoise(x[B,F,4,h,w], sigma[B,F], cond) -> x0[B,F,4,h,w]``. ``cond`` is an
:class:`SVDCond`. Samplers never look inside it; they only use the frame/batch helpers below, so
the same sampler code serves one image, keyframe chains and classifier-free guidance.

Fields (batch ``B``; ``F`` frames where a field is per frame):

- ``image_embeds``: CLIP image embedding, one cross-attention token: ``[B, 1, D]`` (same for every
  frame) or ``[B, F, 1, D]`` (per frame, used when keyframes change inside a window).
- ``concat_latent``: the *unscaled* VAE latent of the (noise-augmented) conditioning image, which
  SVD concatenates to the noisy latent on channels: ``[B, 4, h, w]`` or ``[B, F, 4, h, w]``.
- ``added_time_ids``: ``[B, 3]`` = (fps - 1, motion_bucket_id, noise_aug_strength).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch


@dataclass(frozen=True)
class SVDCond:
    image_embeds: torch.Tensor
    concat_latent: torch.Tensor
    added_time_ids: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.added_time_ids.shape[0]

    @property
    def per_frame(self) -> bool:
        return self.image_embeds.dim() == 4 or self.concat_latent.dim() == 5

    def expand_frames(self, num_frames: int) -> "SVDCond":
        """Per-frame form ``[B, F, ...]`` of every frame-dependent field."""
        emb = self.image_embeds
        if emb.dim() == 3:
            emb = emb.unsqueeze(1).expand(-1, num_frames, -1, -1)
        lat = self.concat_latent
        if lat.dim() == 4:
            lat = lat.unsqueeze(1).expand(-1, num_frames, -1, -1, -1)
        if emb.shape[1] != num_frames or lat.shape[1] != num_frames:
            raise ValueError(
                f"conditioning has {emb.shape[1]} embedding frames and {lat.shape[1]} latent frames; "
                f"expected {num_frames}"
            )
        return replace(self, image_embeds=emb, concat_latent=lat)

    def negative(self) -> "SVDCond":
        """SVD's unconditional branch: zero image embedding and zero concat latent, same time ids."""
        return replace(
            self,
            image_embeds=torch.zeros_like(self.image_embeds),
            concat_latent=torch.zeros_like(self.concat_latent),
        )

    def to(self, device=None, dtype=None) -> "SVDCond":
        return SVDCond(
            self.image_embeds.to(device=device, dtype=dtype),
            self.concat_latent.to(device=device, dtype=dtype),
            self.added_time_ids.to(device=device, dtype=dtype),
        )

    @staticmethod
    def cat(conds: Sequence["SVDCond"]) -> "SVDCond":
        """Concatenate along the batch axis (e.g. conditional + unconditional in one call)."""
        if any(c.per_frame for c in conds) and not all(c.per_frame for c in conds):
            frames = max(
                (c.image_embeds.shape[1] if c.image_embeds.dim() == 4 else c.concat_latent.shape[1])
                for c in conds if c.per_frame
            )
            conds = [c.expand_frames(frames) for c in conds]
        return SVDCond(
            torch.cat([c.image_embeds for c in conds]),
            torch.cat([c.concat_latent for c in conds]),
            torch.cat([c.added_time_ids for c in conds]),
        )

    @staticmethod
    def stack_frames(frame_conds: Sequence["SVDCond"]) -> "SVDCond":
        """Build a per-frame cond ``[B, F, ...]`` from one frame-independent cond per frame.

        Used by samplers whose window holds frames governed by different keyframes. The time ids
        of the first entry are kept (they describe the clip, not a frame).
        """
        emb = torch.stack([c.image_embeds for c in frame_conds], dim=1)
        lat = torch.stack([c.concat_latent for c in frame_conds], dim=1)
        return SVDCond(emb, lat, frame_conds[0].added_time_ids)


def encode_image(
    image_encoder,
    vae,
    image: torch.Tensor,
    fps: float = 6,
    motion_bucket_id: float = 127,
    noise_aug_strength: float = 0.02,
    seed: int = 0,
) -> SVDCond:
    """SVD's conditioning for a start image, as in SGM and diffusers' SVD pipeline.

    ``image``: ComfyUI IMAGE ``[B, H, W, 3]`` floats in 0..1, H and W multiples of 8.

    - ``image_embeds [B, 1, D]``: CLIP embedding of the image *without* noise augmentation.
    - ``concat_latent [B, 4, H/8, W/8]``: unscaled VAE posterior mode of
      ``(image * 2 - 1) + noise_aug_strength * noise``. ``noise`` is drawn on the CPU from a
      ``torch.Generator`` seeded with ``seed``, so a seed gives the same conditioning on any device.
      (ComfyUI's node adds the noise in 0..1 space instead, i.e. half as strong; SGM and diffusers
      add it in -1..1 as here.)
    - ``added_time_ids [B, 3]``: ``(fps - 1, motion_bucket_id, noise_aug_strength)``.

    All fields are float32 on the VAE's device. The negative (unconditional) branch is
    :meth:`SVDCond.negative`.
    """
    # model libraries are imported here so that samplers importing SVDCond stay light
    from ..shapes import check_image
    from .image_encoder import clip_preprocess, embed_image
    from .vae import encode_latent_dist_mode

    batch, _, _ = check_image(image, multiple=8)
    low, high = image.min().item(), image.max().item()
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"image: expected values in 0..1 (ComfyUI IMAGE); found {low:.3g}..{high:.3g}")

    image_embeds = embed_image(image_encoder, clip_preprocess(image))

    pixels = image.float().permute(0, 3, 1, 2) * 2.0 - 1.0
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn(pixels.shape, generator=generator, dtype=torch.float32)
    pixels = pixels + noise_aug_strength * noise.to(pixels.device)
    concat_latent = encode_latent_dist_mode(vae, pixels).float()

    device = concat_latent.device
    return SVDCond(image_embeds.float().to(device), concat_latent,
                   added_time_ids(fps, motion_bucket_id, noise_aug_strength, batch, device))


def added_time_ids(fps, motion_bucket_id, noise_aug_strength, batch: int = 1, device=None) -> torch.Tensor:
    """SVD's added time ids ``[batch, 3]`` = (fps - 1, motion_bucket_id, noise_aug_strength), float32."""
    return torch.tensor([[fps - 1, motion_bucket_id, noise_aug_strength]], dtype=torch.float32,
                        device=device).expand(batch, -1).contiguous()
