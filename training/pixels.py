"""Training pixels: a clip's frames read from a video file (by frame count or, for variable frame
rates, by timestamps), each fitted to ``height x width`` by the nodes' rule; still images; and the
clip's motion score and SVD motion bucket, as ExVideo's training script measures them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class VideoError(Exception):
    """A video cannot give the clip asked for; the message says why."""


# SVD's motion bucket id as ExVideo's training script assigns it: the bucket of the clip's motion
# score among 128 empirical thresholds. These knots are every 16th of those thresholds (score at
# which bucket b starts); between knots the bucket is interpolated linearly, within about one
# bucket of the full table.
MOTION_BUCKET_KNOTS = (
    (0, 0.0), (1, 0.012205946), (16, 0.042368013), (32, 0.072588451), (48, 0.101984538),
    (64, 0.133417681), (80, 0.170251891), (96, 0.214723110), (112, 0.281250387), (127, 0.440871328),
)


def fit_frame(rgb: np.ndarray, height: int, width: int) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> ``uint8 [height, width, 3]`` by the nodes' fitting rule
    (:func:`longvid_core.run.frames.cover_crop`: centre crop to the aspect ratio, then resize)."""
    from longvid_core.run.frames import cover_crop

    image = torch.from_numpy(np.ascontiguousarray(rgb))[None].float() / 255.0
    return (cover_crop(image, width, height)[0] * 255.0).round().clamp(0, 255).to(torch.uint8)


def read_clip(path, start: int, frames: int, stride: int, height: int, width: int) -> torch.Tensor:
    """Frames ``start, start + stride, ...`` (``frames`` of them) -> ``uint8 [frames, H, W, 3]``.

    Frame ``n`` is the ``n``-th frame in presentation order, found by its timestamp
    (:func:`frame_timestamps`): the file is sought to the keyframe before ``start`` and decoded from
    there, so a clip late in a long video costs what one at its start does. Files whose timestamps
    cannot number the frames are decoded from their first frame. Raises :class:`VideoError` when the
    file is unreadable or ends early."""
    import av

    numbers = [start + i * stride for i in range(frames)]
    try:
        table = frame_timestamps(path)
        if table is not None and numbers[-1] >= len(table):
            raise VideoError(f"too short: {len(table)} frames; wanted frames {start} to {numbers[-1]} at stride "
                             f"{stride}")
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            out = None
            if table is not None and start > 0:
                out = _read_by_timestamps(container, stream, [table[n] for n in numbers], height, width)
                if out is None or len(out) < frames:  # the seek landed past the start, or a frame lacked: start over
                    out = None
                    container.seek(0)
            if out is None:
                out = _read_by_count(container, stream, numbers, height, width)
    except VideoError:
        raise
    except Exception as exc:
        raise VideoError(f"unreadable while decoding ({type(exc).__name__}: {exc})") from exc
    if len(out) < frames:
        raise VideoError(f"too short: decoded {len(out)} of the {frames} frames wanted from frame {start} "
                         f"at stride {stride}")
    return torch.stack(out)


def _decode(container, stream):
    """The frames of ``stream`` from the container's position (one place, so tests can count them)."""
    return container.decode(stream)


def _read_by_count(container, stream, numbers, height, width) -> list[torch.Tensor]:
    """Decode from the first frame, counting frames (any file)."""
    wanted, last, out = set(numbers), numbers[-1], []
    for number, frame in enumerate(_decode(container, stream)):
        if number in wanted:
            out.append(fit_frame(frame.to_ndarray(format="rgb24"), height, width))
        if number >= last:
            break
    return out


def _read_by_timestamps(container, stream, timestamps, height, width) -> list[torch.Tensor] | None:
    """Seek to the keyframe at or before ``timestamps[0]`` and decode forward, keeping the frames
    with these timestamps; None when the seek landed past the first of them."""
    container.seek(timestamps[0], stream=stream, backward=True, any_frame=False)
    wanted, out = set(timestamps), []
    for frame in _decode(container, stream):
        if frame.pts is None or (not out and frame.pts > timestamps[0]):
            return None
        if frame.pts in wanted:
            out.append(fit_frame(frame.to_ndarray(format="rgb24"), height, width))
        if frame.pts >= timestamps[-1]:
            break
    return out


_TIMESTAMP_TABLES: dict[tuple, list[int] | None] = {}  # per process (each data-loader worker has its own)


def frame_timestamps(path) -> list[int] | None:
    """Presentation timestamps of the first video stream's frames, in order (frame ``n`` has the
    ``n``-th), read from the packets without decoding and kept for the file's lifetime in this
    process; None when the packets do not number the frames (missing or repeated timestamps)."""
    import av

    stat = Path(path).stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _TIMESTAMP_TABLES:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stamps = []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packets; frames an edit list drops
                    continue
                if packet.pts is None:
                    stamps = None
                    break
                stamps.append(int(packet.pts))
        if stamps is not None:
            stamps.sort()
            if len(set(stamps)) != len(stamps):
                stamps = None
        if len(_TIMESTAMP_TABLES) >= 1024:
            _TIMESTAMP_TABLES.clear()
        _TIMESTAMP_TABLES[key] = stamps
    return _TIMESTAMP_TABLES[key]


def load_image(path, height: int, width: int) -> torch.Tensor:
    """An image file -> ``uint8 [H, W, 3]``, fitted like video frames (:func:`fit_frame`)."""
    from PIL import Image

    with Image.open(path) as image:
        return fit_frame(np.asarray(image.convert("RGB")), height, width)


def find_images(image_dir) -> list[Path]:
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image folder {image_dir} does not exist (expected .png/.jpg/.webp files)")
    images = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise ValueError(f"image folder {image_dir} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    return images


def to_signed(frames_uint8: torch.Tensor) -> torch.Tensor:
    """``uint8 [..., H, W, 3]`` -> float32 ``[..., 3, H, W]`` in [-1, 1] (the VAE's input range)."""
    return frames_uint8.float().div(127.5).sub(1.0).movedim(-1, -3)


def motion_score(frames_uint8: torch.Tensor) -> float:
    """Mean over pixels and channels of the temporal standard deviation of the clip in [-1, 1]
    (ExVideo's measure; 0 for a still clip)."""
    if frames_uint8.shape[0] < 2:
        return 0.0
    return to_signed(frames_uint8).std(dim=0).mean().item()


def motion_bucket_from_score(score: float) -> int:
    """SVD motion bucket id (0..127) for a :func:`motion_score` (see ``MOTION_BUCKET_KNOTS``)."""
    buckets = [b for b, _ in MOTION_BUCKET_KNOTS]
    scores = [s for _, s in MOTION_BUCKET_KNOTS]
    if score <= 0.0:
        return 0
    if score >= scores[-1]:
        return buckets[-1]
    return int(np.floor(np.interp(score, scores, buckets)))


__all__ = [
    "IMAGE_SUFFIXES", "MOTION_BUCKET_KNOTS", "VideoError", "find_images", "fit_frame", "frame_timestamps",
    "load_image", "motion_bucket_from_score", "motion_score", "read_clip", "to_signed",
]
