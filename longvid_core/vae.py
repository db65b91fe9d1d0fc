"""SVD's temporal VAE: building it, encoding images to latents, decoding latents to frames.

The model is diffusers' ``AutoencoderKLTemporalDecoder`` (LDM encoder + SGM "VideoDecoder" whose
resnets and output conv also mix along time). Its weights come from either layout through
:mod:`longvid_core.keymaps.sgm_vae` or a diffusers ``vae/`` folder; see ``loading.py``.

Latent spaces: the VAE itself works in *unscaled* latents; the UNet works in latents multiplied by
:data:`VAE_SCALE`. SVD's concat (conditioning-frame) latent is unscaled, the sampled video latents
are scaled, so :func:`encode_latent_dist_mode` returns unscaled latents and :func:`decode` takes
scaled ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from diffusers import AutoencoderKLTemporalDecoder

from .shapes import check_latents

VAE_SCALE = 0.18215
DEFAULT_DECODE_CHUNK = 14  # SVD's native clip length; bounds decode memory (frames mix only within a chunk)


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

    ``config``: from :func:`longvid_core.keymaps.sgm_vae.config_from_shapes` or a diffusers
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


def _vae_device_dtype(vae: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
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
    device, dtype = _vae_device_dtype(vae)
    images = images.to(device=device, dtype=dtype)
    step = batch_chunk or images.shape[0]
    parts = [vae.encode(images[i:i + step]).latent_dist.mode() for i in range(0, images.shape[0], step)]
    return torch.cat(parts)


def frame_windows(num_frames: int, decode_chunk: int, overlap: int = 0) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges decoded together; the temporal decoder mixes frames only within
    one window.

    ``overlap`` = 0: back-to-back chunks. ``overlap`` > 0: full windows every ``decode_chunk -
    overlap`` frames, cross-faded where they overlap (:class:`longvid_core.decoding.StreamingDecoder`),
    and a remainder decoded as a full-length window ending at the last frame. Overlap removes the
    hard cuts (flicker) at chunk borders; it must be at most half the window.
    """
    from .decoding import check_decode_window

    check_decode_window(decode_chunk, overlap)
    stride = decode_chunk - overlap
    windows = [(start, start + decode_chunk) for start in range(0, num_frames - decode_chunk + 1, stride)]
    covered = windows[-1][1] if windows else 0
    if covered < num_frames:
        start = len(windows) * stride if overlap == 0 else max(0, num_frames - decode_chunk)
        windows.append((start, num_frames))
    return windows


@torch.no_grad()
def decode_window(vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents ``[B, n, 4, h, w]`` of one window -> frames ``[B, n, 3, H, W]`` in -1..1,
    decoded as one clip of ``n`` frames (VAE dtype, VAE device)."""
    batch, frames = latents.shape[:2]
    device, dtype = _vae_device_dtype(vae)
    z = (latents.to(device=device, dtype=dtype) / VAE_SCALE).flatten(0, 1)
    pixels = vae.decode(z, num_frames=frames).sample
    return pixels.unflatten(0, (batch, frames))


@torch.no_grad()
def decode(vae: AutoencoderKLTemporalDecoder, latents: torch.Tensor, decode_chunk: int = DEFAULT_DECODE_CHUNK,
           output_device=None, callback: Callable[[int, int], None] | None = None, overlap: int = 0) -> torch.Tensor:
    """Scaled latents ``[B, F, 4, h, w]`` -> frames ``[B, F, H, W, 3]`` float32 in 0..1.

    Frames are decoded in the windows of :func:`frame_windows` (``decode_chunk`` frames each, as one
    clip for the temporal decoder), so memory is bounded by the window, not the video; ``overlap``
    > 0 cross-fades consecutive windows (no hard cut at window borders).
    ``output_device``: where the frames are gathered (default: the latents' device).
    ``callback(frames_done, frames_total)`` is called after each window (progress bars, interrupts).
    """
    from .decoding import StreamingDecoder  # builds on decode_window above

    batch, num_frames = check_latents(latents, "latents", channels=vae.config.latent_channels)
    if num_frames == 0:
        raise ValueError(f"latents: expected at least one frame; found shape {tuple(latents.shape)}")
    output_device = latents.device if output_device is None else torch.device(output_device)
    frames = None
    done = 0

    def keep(window):
        nonlocal frames, done
        if window is None:
            return
        if frames is None:
            frames = torch.empty((batch, num_frames, *window.shape[2:]), dtype=torch.float32, device=output_device)
        frames[:, done:done + window.shape[1]] = window
        done += window.shape[1]
        if callback is not None:
            callback(done, num_frames)

    decoder = StreamingDecoder(vae, decode_chunk, overlap, output_device=output_device)
    for i in range(num_frames):
        keep(decoder.push(latents[:, i]))
    keep(decoder.finish())
    return frames
