"""Decoding long videos: overlapping temporal windows, cross-faded, streamed frame by frame.

SVD's temporal VAE decoder mixes neighbouring frames, so it must see several latents at once, but a
whole minute at 1024x576 does not fit in memory. Decoding back-to-back chunks bounds memory but
every chunk border is a hard cut between two independent decodes: that is the flicker users see at
chunk borders. :class:`StreamingDecoder` decodes windows of ``window`` latents that overlap by
``overlap`` frames and cross-fades the overlap linearly from the earlier window to the later one,
so no frame is a hard cut and memory stays bounded by one window.

It is fed one latent at a time (``push``), in order, and hands out finished frames as soon as no
later window can change them, so it can sit directly behind a sampler generator
(:func:`longvid_core.samplers.iter_progressive`) and in front of a video writer: a video of any
length passes through with at most ``window`` latents and ``overlap`` decoded frames held.

Which windows are decoded is :func:`longvid_core.vae.frame_windows` (the one rule, also used by
:func:`longvid_core.vae.decode`): full windows every ``window - overlap`` frames; the last,
shorter remainder is decoded as a full-length window ending at the last frame (when ``overlap`` >
0), so the temporal decoder never sees a tiny clip at the end.
"""

from __future__ import annotations

from collections import deque

import torch

from .shapes import check_latents
from .vae import DEFAULT_DECODE_CHUNK, decode_window

# Frames shared by consecutive decode windows and cross-faded (see the module doc).
DEFAULT_DECODE_OVERLAP = 4

# ComfyUI's fixed latent -> RGB map for SD1.x latents (``latent_formats.SD15.latent_rgb_factors``,
# applied to model-space, i.e. scaled, latents). SVD's VAE shares SD1.x's latent space, so ComfyUI
# previews SVD with the same factors. Rows: latent channels; columns: R, G, B.
LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def decode_window_or_default(window: int | None, overlap: int | None) -> tuple[int, int]:
    """``(window, overlap)`` with each one not given (``None``: a model file without decode settings,
    or no command-line override) replaced by the streaming decoder's default (SVD's 14-frame clip)."""
    return (DEFAULT_DECODE_CHUNK if window is None else window,
            DEFAULT_DECODE_OVERLAP if overlap is None else overlap)


def check_decode_window(window: int, overlap: int) -> None:
    """Raise ``ValueError`` saying what to change unless ``1 <= window`` and ``0 <= 2*overlap <= window``."""
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"decode window must be a positive number of frames; got {window!r}")
    if not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"decode overlap must be 0 or more frames; got {overlap!r}")
    if 2 * overlap > window:
        raise ValueError(
            f"decode overlap ({overlap}) must be at most half the decode window ({window}) so that each "
            f"frame is cross-faded between at most two windows; use overlap <= {window // 2} "
            f"or a window >= {2 * overlap}"
        )


def crossfade_weights(count: int) -> torch.Tensor:
    """Weights of the *later* window over ``count`` shared frames: ``(i + 1) / (count + 1)``.

    Strictly between 0 and 1, so the earlier window contributes to every shared frame and the later
    one takes over gradually."""
    return torch.arange(1, count + 1, dtype=torch.float32) / (count + 1)


def latents_to_frames(pixels: torch.Tensor, output_device=None) -> torch.Tensor:
    """Decoder output ``[B, n, 3, H, W]`` in -1..1 -> frames ``[B, n, H, W, 3]`` float32 in 0..1."""
    frames = ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 1, 3, 4, 2)
    return frames if output_device is None else frames.to(output_device)


class StreamingDecoder:
    """Decode latents ``[B, 4, h, w]`` pushed one at a time into frames ``[B, n, H, W, 3]`` (0..1).

    ``window``: latents decoded together as one clip (bounds memory). ``overlap``: frames shared by
    consecutive windows and cross-faded (0 = back-to-back chunks, as ComfyUI decodes). Every call of
    :meth:`push` or :meth:`finish` returns the frames that became final, in order, or ``None``.
    ``on_window(start, end)`` is called after each window is decoded (progress, interrupts).
    """

    def __init__(self, vae, window: int = DEFAULT_DECODE_CHUNK, overlap: int = DEFAULT_DECODE_OVERLAP,
                 output_device=None, on_window=None):
        check_decode_window(window, overlap)
        self.vae = vae
        self.window = window
        self.overlap = overlap
        self.output_device = None if output_device is None else torch.device(output_device)
        self.on_window = on_window
        self._latents: deque[torch.Tensor] = deque(maxlen=window)  # the newest `window` latents
        self._pushed = 0  # latents received
        self._window_start = 0  # first frame of the next full window
        self._emitted = 0  # frames handed out
        self._tail: torch.Tensor | None = None  # decoded frames _emitted.. awaiting the next window's blend
        self._finished = False
        self.windows: list[tuple[int, int]] = []  # decoded windows, for inspection

    @property
    def frames_emitted(self) -> int:
        return self._emitted

    def push(self, latent: torch.Tensor) -> torch.Tensor | None:
        """Add the next latent frame ``[B, 4, h, w]`` (scaled, as samplers produce)."""
        if self._finished:
            raise RuntimeError("StreamingDecoder.push after finish(): make a new decoder for a new video")
        if not isinstance(latent, torch.Tensor) or latent.dim() != 4:
            found = tuple(latent.shape) if isinstance(latent, torch.Tensor) else type(latent).__name__
            raise ValueError(f"latent: expected one frame [batch, channels, height, width]; found {found}")
        self._latents.append(latent)
        self._pushed += 1
        if self._pushed - self._window_start < self.window:
            return None
        start, end = self._window_start, self._pushed
        self._window_start += self.window - self.overlap
        return self._decode(start, end, final=False)

    def push_many(self, latents: torch.Tensor) -> torch.Tensor | None:
        """Push ``[B, n, 4, h, w]`` frame by frame; returns all frames that became final."""
        check_latents(latents, "latents")
        out = [f for f in (self.push(latents[:, i]) for i in range(latents.shape[1])) if f is not None]
        return torch.cat(out, dim=1) if out else None

    def finish(self) -> torch.Tensor | None:
        """The end of the video: decode what is left and return the remaining frames."""
        if self._finished:
            return None
        self._finished = True
        pending = 0 if self._tail is None else self._tail.shape[1]
        if self._pushed == self._emitted + pending:  # nothing after the last full window
            tail, self._tail = self._tail, None
            self._emitted += pending
            return tail
        # A remainder: decode it as a full-length window ending at the last frame (overlapping
        # frames already handed out; their new pixels are dropped), or back to back without overlap.
        start = self._window_start if self.overlap == 0 else max(0, self._pushed - self.window)
        return self._decode(start, self._pushed, final=True)

    def _decode(self, start: int, end: int, final: bool) -> torch.Tensor:
        held_from = self._pushed - len(self._latents)
        latents = torch.stack(list(self._latents)[start - held_from:end - held_from], dim=1)
        frames = latents_to_frames(decode_window(self.vae, latents), self.output_device)
        self.windows.append((start, end))
        new = frames[:, self._emitted - start:]  # frames _emitted .. end-1
        if self._tail is not None:
            shared = self._tail.shape[1]
            weight = crossfade_weights(shared).to(new.device)[None, :, None, None, None]
            new = new.clone()
            new[:, :shared] = torch.lerp(self._tail.to(new.device), new[:, :shared], weight)
        keep = 0 if final else self.overlap
        out, self._tail = new[:, :new.shape[1] - keep], (new[:, new.shape[1] - keep:] if keep else None)
        self._emitted += out.shape[1]
        if self.on_window is not None:
            self.on_window(start, end)
        return out


@torch.no_grad()
def approximate_rgb(latent: torch.Tensor) -> torch.Tensor:
    """A cheap preview of one latent frame: ``[4, h, w]`` or ``[B, 4, h, w]`` (model space, scaled)
    -> ``[h, w, 3]`` float32 in 0..1 (first batch item), via :data:`LATENT_RGB_FACTORS` (no VAE)."""
    if latent.dim() == 4:
        latent = latent[0]
    if latent.dim() != 3 or latent.shape[0] != len(LATENT_RGB_FACTORS):
        raise ValueError(f"latent: expected [4, h, w] or [batch, 4, h, w]; found {tuple(latent.shape)}")
    factors = torch.tensor(LATENT_RGB_FACTORS, dtype=torch.float32, device=latent.device)
    rgb = torch.einsum("chw,cr->hwr", latent.float(), factors)
    return ((rgb + 1.0) / 2.0).clamp(0.0, 1.0)


__all__ = [
    "DEFAULT_DECODE_OVERLAP",
    "LATENT_RGB_FACTORS",
    "StreamingDecoder",
    "approximate_rgb",
    "check_decode_window",
    "crossfade_weights",
    "latents_to_frames",
]
