"""Writing (and reading back) mp4 files frame by frame, with PyAV.

:class:`VideoWriter` encodes frames as they arrive (H.264, yuv420p, the format every browser and
player accepts), so a video of any length is written without ever holding all its frames: the
samplers yield latents one at a time, :class:`longvid_core.networks.decoding.StreamingDecoder` turns them
into frames, and the writer puts them in the file.

Nothing is lost: frames go to ``<name>.partial.mp4`` beside the target, renamed to the target only
when the video is complete, so an existing file is never destroyed by a run that fails. The file is
fragmented MP4 (a self-contained fragment at least every second), so after an interruption — an
error, a cancel, Ctrl-C, SIGTERM, even SIGKILL or a power cut — ``<name>.partial.mp4`` plays
every fragment written so far.
"""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..networks.decoding import StreamingDecoder
from ..problems import Problem, describe_path, raise_problem
from ..progress import ProgressCallback

DEFAULT_CRF = 19  # x264 constant-rate factor: visually lossless for most content; lower = larger files
DEFAULT_CODEC = "libx264"
DEFAULT_PIX_FMT = "yuv420p"
# Containers the H.264 stream and the fragmenting options below are written into (FFmpeg's mov muxer).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
PARTIAL = ".partial"  # <stem>.partial<suffix>: a video still being written, or cut short
# empty_moov: the header goes first; frag_duration: a fragment (moof+mdat) at least every second, so a
# file cut at any point plays up to its last whole fragment.
FRAGMENTED = {"movflags": "empty_moov+default_base_moof+frag_keyframe", "frag_duration": "1000000",
              "flush_packets": "1"}  # each fragment reaches the file as it is made


def output_problem(path, input: str = "output") -> Problem | None:
    """Whether a video can be written to ``path``, checked before any work: a known container
    suffix, not a folder, and a folder that exists or can be made, into which this process can
    write (tried with a real file: permission bits, read-only mounts and full disks all count)."""
    path = Path(path)
    if path.suffix.lower() not in CONTAINERS:
        return Problem(input, f"a video file name ending in {' or '.join(CONTAINERS)}", path.name or str(path))
    if path.is_dir():
        return Problem(input, "a video file name", f"the folder {path}")
    return writable_folder_problem(path.parent, input)


def writable_folder_problem(folder, input: str) -> Problem | None:
    """``folder`` exists (or its nearest existing parent is a folder) and takes a new file."""
    folder = Path(folder) if str(folder) else Path(".")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Problem(input, "a path inside a folder", f"{describe_path(existing)} in the way")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".longvid-write-test-")
    except OSError as e:
        return Problem(input, "a folder this user can write to", f"{existing}: {e.strerror or e}")
    os.close(handle)
    os.unlink(probe)
    return None


def partial_path(path) -> Path:
    """``clip.mp4`` -> ``clip.partial.mp4``, the name a video has while it is written."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PARTIAL}{path.suffix}")


def _reserve_partial(path: Path) -> Path:
    """The first of ``clip.partial.mp4``, ``clip.partial-2.mp4``, ... that does not exist, created
    empty (so two runs never share one, and an earlier run's partial video is kept)."""
    base = partial_path(path)
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{path.stem}{PARTIAL}-{n}{path.suffix}")
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return candidate
        except FileExistsError:
            continue
    raise_problem(Problem("output", "room for a partial file name", f"{base} and 9,998 more partial files"))


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
    The parent folder is created. ``frames_written`` counts frames so far. Frames go to
    :func:`partial_path`; leaving the ``with`` block normally renames it to ``path``, leaving it by
    an exception keeps it under its partial name (or removes it when it holds no frame).
    ``kept_path``: where the frames are once closed (None: no file).
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
        self.kept_path: Path | None = None
        self._av = _import_av()
        raise_problem(output_problem(self.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial_path = _reserve_partial(self.path)
        try:
            self._container = self._av.open(str(self.partial_path), mode="w",
                                            format=CONTAINERS[self.path.suffix.lower()], options=dict(FRAGMENTED))
        except BaseException:
            self.partial_path.unlink(missing_ok=True)
            raise
        self._stream = None

    def _open_stream(self, height: int, width: int) -> None:
        if self.pix_fmt == "yuv420p" and (height % 2 or width % 2):
            self.close(complete=False)
            raise ValueError(
                f"H.264 yuv420p needs an even width and height; the frames are {width}x{height}: "
                "crop or resize them to even sizes"
            )
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, self.pix_fmt
        # a keyframe at least every 2 s: fragments stay short and a cut file seeks well
        stream.options = {"crf": str(self.crf), "g": str(max(1, round(2 * self.fps)))}
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

    def close(self, complete: bool = True) -> Path | None:
        """Flush the encoder and finish the file (idempotent). ``complete``: the video is whole, so
        it takes the target's name; otherwise it keeps its partial name (removed if it holds no
        frame). Returns where the frames are (:attr:`kept_path`)."""
        container, self._container = self._container, None
        if container is None:
            return self.kept_path
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    container.mux(packet)
        finally:
            container.close()
            if self.frames_written == 0 and not complete:
                self.partial_path.unlink(missing_ok=True)
            elif complete:
                os.replace(self.partial_path, self.path)
                self.kept_path = self.path
            else:
                self.kept_path = self.partial_path
        return self.kept_path

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(complete=exc_type is None)


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
                       frames_total: int | None = None, on_frames=None, on_open=None) -> int:
    """Decode latent frames ``[B, 4, h, w]`` (any iterable; batch item 0 is written) as they arrive
    through :class:`~longvid_core.networks.decoding.StreamingDecoder` and write them to an mp4; returns the
    frames written. ``callback``: decoding progress and cancel; ``on_frames(first_index,
    frames[n, H, W, 3])`` sees every batch of frames written; ``on_open(writer)`` the
    :class:`VideoWriter` once it is open. If anything raises (a cancelled run), the file is still
    finished and plays with the frames written so far, under its partial name."""
    decoder = StreamingDecoder(vae, window, overlap, "cpu", callback, frames_total)
    with VideoWriter(path, fps, crf=crf) as writer:
        if on_open is not None:
            on_open(writer)
        def emit(frames):
            if frames is not None:
                if on_frames is not None:
                    on_frames(writer.frames_written, frames[0])
                writer.write(frames[0])

        for latent in latents:
            emit(decoder.push(latent))
        emit(decoder.finish())
        return writer.frames_written


__all__ = ["CONTAINERS", "DEFAULT_CRF", "VideoWriter", "frame_rate", "output_problem", "partial_path", "read_video",
           "to_uint8", "writable_folder_problem", "write_latent_video"]
