"""Writing (and reading back) mp4 files frame by frame, with PyAV.

:class:`VideoWriter` encodes frames as they arrive (H.264, yuv420p, the format every browser and
player accepts), so a video of any length is written without ever holding all its frames: the
samplers yield latents one at a time, :class:`longvid_core.decoding.StreamingDecoder` turns them
into frames, and the writer puts them in the file. Closing the writer (also on an error or a
cancelled run, via ``with``) finishes the file, so it plays with every frame written so far.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from .decoding import StreamingDecoder
from .progress import ProgressCallback

DEFAULT_CRF = 19  # x264 constant-rate factor: visually lossless for most content; lower = larger files
DEFAULT_CODEC = "libx264"
DEFAULT_PIX_FMT = "yuv420p"


def _import_av():
    try:
        import av
    except ImportError as e:  # pragma: no cover - av is a dependency; this names the fix if it is missing
        raise ImportError("writing mp4 files needs PyAV: pip install av") from e
    return av


def frame_rate(fps) -> Fraction:
    """``fps`` (int, float or Fraction) as the exact fraction the container stores, e.g. 7.5 -> 15/2,
    29.97 -> 2997/100."""
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be > 0; got {fps}")
    return rate


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Frames ``[n, H, W, 3]`` or ``[H, W, 3]`` (float 0..1 or uint8) -> uint8 numpy ``[n, H, W, 3]``."""
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected [frames, height, width, 3] (RGB); found {tuple(frames.shape)}")
    if frames.dtype != torch.uint8:
        frames = (frames.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return frames.cpu().numpy()


class VideoWriter:
    """An mp4 file written frame by frame: ``with VideoWriter(path, fps) as w: w.write(frames)``.

    ``frames``: ``[n, H, W, 3]`` or ``[H, W, 3]``, float 0..1 or uint8; the first write fixes the
    size (yuv420p needs even width and height). ``crf``: x264 quality (0 lossless .. 51 worst).
    The parent folder is created. ``frames_written`` counts frames so far.
    """

    def __init__(self, path, fps, *, crf: int = DEFAULT_CRF, codec: str = DEFAULT_CODEC,
                 pix_fmt: str = DEFAULT_PIX_FMT):
        self.path = Path(path)
        self.fps = frame_rate(fps)
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf must be between 0 (lossless) and 51 (worst); got {crf}")
        self.crf = int(crf)
        self.codec = codec
        self.pix_fmt = pix_fmt
        self.frames_written = 0
        self.size: tuple[int, int] | None = None  # (width, height)
        self._av = _import_av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = self._av.open(str(self.path), mode="w")
        self._stream = None

    def _open_stream(self, height: int, width: int) -> None:
        if self.pix_fmt == "yuv420p" and (height % 2 or width % 2):
            self.close()
            raise ValueError(
                f"H.264 yuv420p needs an even width and height; the frames are {width}x{height}: "
                "crop or resize them to even sizes"
            )
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
        stream.options = {"crf": str(self.crf)}
        self._stream = stream
        self.size = (width, height)

    def write(self, frames: torch.Tensor) -> None:
        if self._container is None:
            raise RuntimeError(f"{self.path}: the writer is closed")
        pixels = to_uint8(frames)
        height, width = pixels.shape[1:3]
        if self._stream is None:
            self._open_stream(height, width)
        elif (width, height) != self.size:
            raise ValueError(f"frames of {width}x{height} after frames of {self.size[0]}x{self.size[1]}: "
                             "every frame of a video must have the same size")
        for pixel_frame in pixels:
            frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(pixel_frame), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    container.mux(packet)
        finally:
            container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_video(path, max_frames: int | None = None) -> tuple[torch.Tensor, Fraction]:
    """Decode an mp4 (any format PyAV reads) -> (frames ``[n, H, W, 3]`` float32 0..1, fps).

    Holds every frame read: for checks and short clips, not for hour-long files."""
    av = _import_av()
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.base_rate
        for frame in container.decode(stream):
            frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no video frames found")
    return torch.stack(frames).float() / 255.0, Fraction(fps)


def write_latent_video(vae, latents, path, fps, *, window: int | None = None, overlap: int | None = None,
                       crf: int = DEFAULT_CRF, callback: ProgressCallback | None = None,
                       frames_total: int | None = None, on_frames=None) -> int:
    """Decode latent frames ``[B, 4, h, w]`` (any iterable; batch item 0 is written) as they arrive
    through :class:`~longvid_core.decoding.StreamingDecoder` and write them to an mp4; returns the
    frames written. ``callback``: decoding progress and cancel; ``on_frames(first_index,
    frames[n, H, W, 3])`` sees every batch of frames written. If anything raises (a cancelled run),
    the file is still finished and plays with the frames written so far."""
    decoder = StreamingDecoder(vae, window, overlap, "cpu", callback, frames_total)
    with VideoWriter(path, fps, crf=crf) as writer:
        def emit(frames):
            if frames is not None:
                if on_frames is not None:
                    on_frames(writer.frames_written, frames[0])
                writer.write(frames[0])

        for latent in latents:
            emit(decoder.push(latent))
        emit(decoder.finish())
        return writer.frames_written


__all__ = ["DEFAULT_CRF", "VideoWriter", "frame_rate", "read_video", "to_uint8", "write_latent_video"]
