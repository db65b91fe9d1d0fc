"""All of decoding: latents -> frames through SVD's temporal VAE, in overlapping windows, streamed.

SVD's temporal decoder mixes neighbouring frames, so it must see several latents at once, but a
minute at 1024x576 does not fit in memory, and back-to-back chunks leave a hard cut (flicker) at
every border. One rule, :func:`frame_windows`, says which windows are decoded: ``window`` latents
every ``window - overlap`` frames, the overlap cross-faded from the earlier window to the later
one, and a shorter remainder decoded as a full-length window ending at the last frame.
:class:`StreamingDecoder` follows it one latent at a time (behind a sampler, in front of a
writer), holding at most one window; :func:`decode` is the same for a whole tensor.
"""

from __future__ import annotations

from collections import deque

import torch

from ..problems import Problem, raise_problem
from ..progress import DECODING, Cancelled, Progress, ProgressCallback, report
from ..shapes import check_latents
from .nonfinite import check_decoded
from .vae import VAE_SCALE, vae_device_dtype

DEFAULT_DECODE_WINDOW = 14  # SVD's native clip length; bounds decode memory
DEFAULT_DECODE_OVERLAP = 4  # frames shared and cross-faded by consecutive windows (at most half a window)

# ComfyUI's fixed latent -> RGB map for SD1.x latents (``latent_formats.SD15.latent_rgb_factors``,
# applied to model-space, i.e. scaled, latents). SVD's VAE shares SD1.x's latent space, so ComfyUI
# previews SVD with the same factors. Rows: latent channels; columns: R, G, B.
LATENT_RGB_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def decode_settings(window: int | None = None, overlap: int | None = None) -> tuple[int, int]:
    """``(window, overlap)``, checked, with each one not given replaced by the default: a window of
    :data:`DEFAULT_DECODE_WINDOW`, an overlap of :data:`DEFAULT_DECODE_OVERLAP` but at most half
    the window."""
    window = DEFAULT_DECODE_WINDOW if window is None else window
    if overlap is None:
        overlap = min(DEFAULT_DECODE_OVERLAP, window // 2) if isinstance(window, int) else 0
    check_decode_window(window, overlap)
    return window, overlap


def decode_window_problem(window, overlap) -> Problem | None:
    """What is wrong with a decode window and overlap, or None: ``1 <= window`` and
    ``0 <= 2*overlap <= window`` (each frame cross-faded between at most two windows)."""
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        return Problem("decode_window", "a positive number of frames", repr(window))
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        return Problem("decode_overlap", "0 or more frames", repr(overlap))
    if 2 * overlap > window:
        return Problem("decode_overlap", f"at most half the decode window ({window}) so that each frame is "
                       "cross-faded between at most two windows", overlap,
                       f"use overlap <= {window // 2} or a window >= {2 * overlap}")
    return None


def check_decode_window(window: int, overlap: int) -> None:
    """Raise :class:`~longvid_core.problems.InputError` unless :func:`decode_window_problem` finds none."""
    raise_problem(decode_window_problem(window, overlap))


def crossfade_weights(count: int) -> torch.Tensor:
    """Weights of the *later* window over ``count`` shared frames: ``(i + 1) / (count + 1)``.

    Strictly between 0 and 1, so the earlier window contributes to every shared frame and the later
    one takes over gradually."""
    return torch.arange(1, count + 1, dtype=torch.float32) / (count + 1)


def latents_to_frames(pixels: torch.Tensor, output_device=None) -> torch.Tensor:
    """Decoder output ``[B, n, 3, H, W]`` in -1..1 -> frames ``[B, n, H, W, 3]`` float32 in 0..1."""
    frames = ((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0).permute(0, 1, 3, 4, 2)
    return frames if output_device is None else frames.to(output_device)


def frame_windows(num_frames: int, window: int | None = None, overlap: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges decoded together (see the module doc); defaults as
    :func:`decode_settings`. With ``overlap`` 0 the remainder is a short back-to-back chunk."""
    window, overlap = decode_settings(window, overlap)
    stride = window - overlap
    windows = [(start, start + window) for start in range(0, num_frames - window + 1, stride)]
    covered = windows[-1][1] if windows else 0
    if covered < num_frames:
        start = len(windows) * stride if overlap == 0 else max(0, num_frames - window)
        windows.append((start, num_frames))
    return windows


@torch.no_grad()
def decode_window(vae, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents ``[B, n, 4, h, w]`` of one window -> frames ``[B, n, 3, H, W]`` in -1..1,
    decoded as one clip of ``n`` frames (VAE dtype, VAE device)."""
    batch, frames = latents.shape[:2]
    device, dtype = vae_device_dtype(vae)
    z = (latents.to(device=device, dtype=dtype) / VAE_SCALE).flatten(0, 1)
    pixels = vae.decode(z, num_frames=frames).sample
    return pixels.unflatten(0, (batch, frames))


class StreamingDecoder:
    """Decode latents ``[B, 4, h, w]`` pushed one at a time into frames ``[B, n, H, W, 3]`` (0..1),
    window by window as :func:`frame_windows` says.

    :meth:`push` and :meth:`finish` return the frames that became final, in order, or ``None``.
    ``callback`` gets a :class:`~longvid_core.progress.Progress` (stage ``decoding``, frames
    decoded so far of ``frames_total``) after each window; returning ``False`` raises
    :class:`~longvid_core.progress.Cancelled` after that window's frames were handed out.
    """

    def __init__(self, vae, window: int | None = None, overlap: int | None = None, output_device=None,
                 callback: ProgressCallback | None = None, frames_total: int | None = None):
        self.window, self.overlap = decode_settings(window, overlap)
        self.vae = vae
        self.output_device = None if output_device is None else torch.device(output_device)
        self.callback = callback
        self.frames_total = frames_total
        self._latents: deque[torch.Tensor] = deque(maxlen=self.window)  # the newest `window` latents
        self._pushed = 0  # latents received
        self._window_start = 0  # first frame of the next full window
        self._emitted = 0  # frames handed out
        self._tail: torch.Tensor | None = None  # decoded frames _emitted.. awaiting the next window's blend
        self._finished = False
        self._cancelled = False
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
        self._raise_if_cancelled()
        self._latents.append(latent)
        self._pushed += 1
        if self._pushed - self._window_start < self.window:
            return None
        start, end = self._window_start, self._pushed
        self._window_start += self.window - self.overlap
        return self._decode(start, end, final=False)

    def finish(self) -> torch.Tensor | None:
        """The end of the video: decode what is left and return the remaining frames."""
        self._raise_if_cancelled()
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
        pixels = decode_window(self.vae, latents)
        check_decoded(self.vae, pixels, (start, end))  # before the clamp hides NaN as black
        frames = latents_to_frames(pixels, self.output_device)
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
        self._cancelled = report(self.callback, Progress(DECODING, end, self.frames_total, self._emitted,
                                                         self.frames_total))
        return out

    def _raise_if_cancelled(self) -> None:
        if self._cancelled:  # the frames of the window that asked were handed out first
            raise Cancelled(DECODING, self.windows[-1][1], self._emitted)


@torch.no_grad()
def decode(vae, latents: torch.Tensor, window: int | None = None, overlap: int | None = None,
           output_device=None, callback: ProgressCallback | None = None) -> torch.Tensor:
    """Scaled latents ``[B, F, 4, h, w]`` -> frames ``[B, F, H, W, 3]`` float32 in 0..1, through
    :class:`StreamingDecoder` (same windows, same progress); gathered on ``output_device``
    (default: the latents' device)."""
    batch, num_frames = check_latents(latents, "latents", channels=vae.config.latent_channels)
    if num_frames == 0:
        raise ValueError(f"latents: expected at least one frame; found shape {tuple(latents.shape)}")
    output_device = latents.device if output_device is None else torch.device(output_device)
    decoder = StreamingDecoder(vae, window, overlap, output_device, callback, num_frames)
    pieces = [decoder.push(latents[:, i]) for i in range(num_frames)] + [decoder.finish()]
    return torch.cat([p for p in pieces if p is not None], dim=1)


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
    "DEFAULT_DECODE_WINDOW",
    "decode",
    "decode_settings",
    "decode_window",
    "frame_windows",
    "LATENT_RGB_FACTORS",
    "StreamingDecoder",
    "approximate_rgb",
    "check_decode_window",
    "decode_window_problem",
    "crossfade_weights",
    "latents_to_frames",
]
