"""SVD's EDM denoiser: the one function every sampler calls.

``denoise(x[B,F,4,h,w], sigma[B,F], cond) -> x0[B,F,4,h,w]`` (the k-diffusion contract, with a
noise level per frame). SVD is an EDM v-prediction model with sigma_data = 1 (Karras et al. 2022,
Table 1; SVD Sec. 4): with s = sigma,

    c_skip = 1/(s^2+1),  c_out = -s/sqrt(s^2+1),  c_in = 1/sqrt(s^2+1),  c_noise = ln(s)/4
    x0 = c_skip * x + c_out * F(c_in * x, c_noise)

All four are computed per frame, in float32, whatever dtype the UNet runs in.
"""

from __future__ import annotations

import torch

from ..shapes import check_latents, per_frame_sigma
from .conditioning import SVDCond


def edm_preconditioning(sigma: torch.Tensor):
    """(c_skip, c_out, c_in, c_noise) for SVD's v-prediction, sigma_data = 1."""
    sigma = sigma.to(torch.float32)
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma / torch.sqrt(sigma**2 + 1.0)
    c_in = 1.0 / torch.sqrt(sigma**2 + 1.0)
    c_noise = 0.25 * torch.log(sigma)
    return c_skip, c_out, c_in, c_noise


def svd_denoise(unet, x: torch.Tensor, sigma, cond: SVDCond, **unet_options):
    """Predict clean latents ``x0`` from noisy ``x`` at per-frame noise ``sigma`` (see module doc).

    ``cond`` may hold the conditional and unconditional batches together; its batch must equal
    ``x``'s. The concat latent is appended on channels *unscaled*, as SVD was trained.
    ``unet_options``: ``deep_features`` / ``keep_deep_features`` (:mod:`longvid_core.sampling.step_cache`);
    with ``keep_deep_features`` the result is ``(x0, deep_features)``.
    """
    batch, frames = check_latents(x, "x", channels=unet.config.out_channels)
    sigma = per_frame_sigma(sigma, batch, frames, x.device)
    if (sigma <= 0).any():
        raise ValueError(f"sigma must be > 0 for the model (c_noise = ln(sigma)/4); found min {sigma.min().item()}")
    if cond.batch_size != batch:
        raise ValueError(f"cond has batch {cond.batch_size}; expected the latents' batch {batch}")
    cond = cond.expand_frames(frames)
    if cond.concat_latent.shape[-2:] != x.shape[-2:]:
        raise ValueError(
            f"cond's concat latent is {tuple(cond.concat_latent.shape[-2:])} (h, w) but the latents are "
            f"{tuple(x.shape[-2:])}: encode the first frame at the video's size"
        )
    c_skip, c_out, c_in, c_noise = (c[..., None, None, None] for c in edm_preconditioning(sigma))
    dtype = unet.dtype
    model_in = torch.cat([(x.float() * c_in).to(dtype), cond.concat_latent.to(x.device, dtype)], dim=2)
    if model_in.shape[2] != unet.config.in_channels:
        raise ValueError(
            f"UNet expects {unet.config.in_channels} input channels (noisy latent + concat latent); "
            f"found {x.shape[2]} + {cond.concat_latent.shape[2]}"
        )
    out = unet(
        model_in,
        c_noise[..., 0, 0, 0],
        cond.image_embeds.to(x.device, dtype),
        cond.added_time_ids.to(x.device, dtype),
        **unet_options,
    )
    deep = None
    if unet_options.get("keep_deep_features"):
        out, deep = out
    x0 = (out.float() * c_out + x.float() * c_skip).to(x.dtype)
    return x0 if deep is None else (x0, deep)
