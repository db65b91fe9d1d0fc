"""Training data: a folder of videos (and optionally of still images) -> clips of pixel frames.

- **Finding videos**: every ``.mp4``, ``.webm`` and ``.mov`` under the data folder, or exactly the
  files listed in a metadata file (JSON or CSV, one record per video: ``path`` relative to the
  folder, optional ``fps`` that overrides the file's own rate, optional ``caption``, kept for
  reference: SVD is conditioned on an image, not text).
- **Indexing** (:func:`index_videos`): each file's header is read once; a file that cannot be read,
  or that has fewer frames than one clip needs, is *reported and skipped* (:class:`SkippedVideo`),
  never fatal. A clip that still fails when it is decoded later is reported and replaced by the
  next clip of the same epoch.
- **Clips**: ``frames`` frames taken every ``stride`` source frames from a start that is random per
  sample (or fixed when latents are cached); each frame is fitted to ``height x width`` by
  :func:`longvid_core.run.frames.cover_crop`, the rule the nodes apply to a start image (centre crop
  to the aspect ratio, then resize: for a square crop, the short side). Frames stay ``uint8``
  until the trainer encodes them.
- **Motion bucket** (SVD's ``motion_bucket_id``): from the clip's pixel-space temporal standard
  deviation, as ExVideo's training script measures motion (:func:`training.pixels.motion_score`,
  :func:`training.pixels.motion_bucket_from_score`), or a fixed value chosen by the trainer.
- **Order**: sample ``g`` (counted over all processes) is item ``perm_e[g mod N]`` of epoch
  ``e = g // N`` with ``perm_e`` a permutation seeded by (seed, e); the trainer records how many
  samples it consumed, so a resumed run continues with exactly the next ones.
- **Cache**: with a :class:`training.latent_cache.LatentCache`, clip starts are fixed and encoded
  clips are read back from it instead of being decoded again.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from .determinism import derive_seed, generator
from .pixels import VideoError, load_image, motion_score, read_clip

if TYPE_CHECKING:
    from .latent_cache import LatentCache

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov")
METADATA_NAMES = ("metadata.json", "metadata.csv")
DEFAULT_FPS = 30.0  # when a file states no frame rate


@dataclass(frozen=True)
class VideoEntry:
    path: Path
    fps: float | None = None
    caption: str = ""


@dataclass(frozen=True)
class VideoInfo:
    """A usable video: its file, source frame count, frame rate and size."""

    entry: VideoEntry
    frames: int
    fps: float
    width: int
    height: int

    @property
    def path(self) -> Path:
        return self.entry.path


@dataclass(frozen=True)
class SkippedVideo:
    path: str
    reason: str

    def as_dict(self) -> dict:
        return {"path": self.path, "reason": self.reason}


# ---------------------------------------------------------------------------------------------
# Finding and indexing videos


def read_metadata(path, data_dir) -> list[VideoEntry]:
    """Records of a metadata file: JSON (a list of objects, or ``{"videos": [...]}``) or CSV (a
    header row with a ``path`` column, optional ``fps`` and ``caption``)."""
    path, data_dir = Path(path), Path(data_dir)
    if path.suffix.lower() == ".json":
        records = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(records, dict):
            records = records.get("videos")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of {{\"path\": ..., \"fps\": ..., \"caption\": ...}} "
                             f"objects (or {{\"videos\": [...]}}); found {type(records).__name__}")
    elif path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            records = list(csv.DictReader(fh))
    else:
        raise ValueError(f"{path}: metadata must be a .json or .csv file; found {path.suffix or 'no suffix'}")
    entries = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not record.get("path"):
            raise ValueError(f"{path}: record {number} has no 'path'; found {record!r}")
        fps = record.get("fps")
        fps = float(fps) if fps not in (None, "") else None
        video = Path(record["path"])
        video = video if video.is_absolute() else data_dir / video
        entries.append(VideoEntry(video, fps, str(record.get("caption") or "")))
    return entries


def find_videos(data_dir, metadata=None) -> tuple[list[VideoEntry], list[SkippedVideo]]:
    """Videos to train on: those listed in ``metadata`` (or a ``metadata.json``/``.csv`` in the
    folder), else every video file under the folder, sorted. Listed files that do not exist are
    returned as skipped."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist (expected a folder of .mp4/.webm/.mov videos)")
    if metadata is None:
        metadata = next((data_dir / name for name in METADATA_NAMES if (data_dir / name).is_file()), None)
    if metadata is not None:
        entries = read_metadata(metadata, data_dir)
        missing = [SkippedVideo(str(e.path), f"listed in {Path(metadata).name} but not found") for e in entries
                   if not e.path.is_file()]
        return [e for e in entries if e.path.is_file()], missing
    files = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return [VideoEntry(p) for p in files], []


def probe_video(path) -> tuple[int, float, int, int]:
    """``(frames, fps, width, height)`` of a video's first video stream, from its header (counting
    packets when the header does not state the frame count). Raises :class:`VideoError`."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else DEFAULT_FPS
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0)
            if frames <= 0:  # webm and some mov files do not say: count the packets (no decoding)
                frames = sum(1 for packet in container.demux(stream) if packet.size)
    except VideoError:
        raise
    except Exception as exc:  # PyAV raises many error types for broken files
        raise VideoError(f"unreadable ({type(exc).__name__}: {exc})") from exc
    if frames <= 0 or width <= 0 or height <= 0:
        raise VideoError(f"unreadable (no frames: {frames} frames of {width}x{height})")
    return frames, fps, width, height


def source_frames_needed(frames: int, stride: int) -> int:
    return (frames - 1) * stride + 1


def index_videos(entries: Sequence[VideoEntry], frames: int, stride: int) -> tuple[list[VideoInfo], list[SkippedVideo]]:
    """Probe every video; keep those with at least ``(frames - 1) * stride + 1`` frames."""
    needed = source_frames_needed(frames, stride)
    usable, skipped = [], []
    for entry in entries:
        try:
            count, fps, width, height = probe_video(entry.path)
        except VideoError as exc:
            skipped.append(SkippedVideo(str(entry.path), str(exc)))
            continue
        if count < needed:
            reason = f"too short: {count} frames; a clip of {frames} frames at stride {stride} needs {needed}"
            skipped.append(SkippedVideo(str(entry.path), reason))
            continue
        usable.append(VideoInfo(entry, count, entry.fps or fps, width, height))
    return usable, skipped
# ---------------------------------------------------------------------------------------------
# Dataset and sampler


@dataclass
class ClipSpec:
    frames: int
    stride: int
    height: int
    width: int


@dataclass
class Failure:
    path: str
    reason: str


@dataclass
class ClipSample:
    """One clip as the data loader hands it to the trainer: either decoded pixels (``pixels``) or,
    from the cache, ``latents``/``image_embeds``/``concat_latent`` plus the first frame.
    ``condition_pixels``: the picture the clip is conditioned on when it is not the clip's own first
    frame (``--condition-frame video``: the video's first frame, uint8 ``[H, W, 3]``)."""

    index: int
    path: str
    start: int
    fps: float
    motion_score: float
    cache_key: str | None = None
    pixels: torch.Tensor | None = None
    cached: dict | None = None
    failures: list = field(default_factory=list)
    condition_pixels: torch.Tensor | None = None

    @property
    def first_frame(self) -> torch.Tensor:
        return self.pixels[0] if self.pixels is not None else self.cached["first_frame"]

    @property
    def conditioned_on_own_first_frame(self) -> bool:
        return self.condition_pixels is None and not (self.cached is not None and "condition_frame" in self.cached)

    @property
    def condition_frame(self) -> torch.Tensor:
        """The conditioning picture: ``condition_pixels`` (or the cache's ``condition_frame``) if the
        clip has one, else its own first frame."""
        if self.conditioned_on_own_first_frame:
            return self.first_frame
        return self.condition_pixels if self.condition_pixels is not None else self.cached["condition_frame"]


class ClipDataset(torch.utils.data.Dataset):
    """Clips of indexed videos; ``dataset[g]`` is global sample number ``g`` (see module doc)."""

    MAX_ATTEMPTS = 16

    def __init__(self, videos: Sequence[VideoInfo], spec: ClipSpec, seed: int, clips_per_video: int = 1,
                 cache: LatentCache | None = None, condition_frame: str = "clip"):
        if condition_frame not in ("clip", "video"):
            raise ValueError(f"condition_frame must be 'clip' or 'video'; found {condition_frame!r}")
        if not videos:
            raise ValueError("no usable videos: every video was skipped (see the report above)")
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1; found {clips_per_video}")
        self.videos = list(videos)
        self.spec = spec
        self.seed = seed
        self.clips_per_video = clips_per_video
        self.cache = cache
        self.condition_frame = condition_frame
        self._permutations: dict[int, torch.Tensor] = {}

    @property
    def items(self) -> int:
        return len(self.videos) * self.clips_per_video

    def __len__(self) -> int:
        return self.items

    def item_of(self, sample: int) -> int:
        epoch, offset = divmod(sample, self.items)
        if epoch not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            self._permutations[epoch] = torch.randperm(self.items, generator=generator(self.seed, "epoch", epoch))
        return int(self._permutations[epoch][offset])

    def fixed_clip_coverage(self) -> tuple[int, int, int] | None:
        """With a cache, clip starts are fixed (:meth:`clip_start`): ``(distinct clips, source frames
        they cover, source frames in all videos)``; ``None`` without a cache (random starts).

        Why it is reported: with ``clips_per_video`` 1, every clip is its video's first frames, so a
        long run sees the same few clips over and over. LongVid's small model was first trained
        that way: 400 clips, frames 0-9 of 400 videos of 40 frames, each seen 150 times."""
        if self.cache is None:
            return None
        needed = source_frames_needed(self.spec.frames, self.spec.stride)
        covered = total = 0
        for video in self.videos:
            frames = torch.zeros(video.frames, dtype=torch.bool)
            for clip in range(self.clips_per_video):
                start = self.clip_start(video, clip, 0)
                frames[start:start + needed:self.spec.stride] = True
            covered += int(frames.sum())
            total += video.frames
        return len(self.videos) * self.clips_per_video, covered, total

    def clip_start(self, video: VideoInfo, clip: int, sample: int) -> int:
        slack = video.frames - source_frames_needed(self.spec.frames, self.spec.stride)
        if slack <= 0:
            return 0
        if self.cache is not None:  # cached clips must be the same clip every time
            return (clip * slack) // max(self.clips_per_video - 1, 1) if self.clips_per_video > 1 else 0
        return int(torch.randint(0, slack + 1, (), generator=generator(self.seed, "start", sample)))

    def __getitem__(self, sample: int) -> ClipSample:
        failures = []
        epoch_start = sample - sample % self.items
        for attempt in range(self.MAX_ATTEMPTS):
            item = self.item_of(epoch_start + (sample - epoch_start + attempt) % self.items)
            video = self.videos[item // self.clips_per_video]
            start = self.clip_start(video, item % self.clips_per_video, sample)
            fps = video.fps / self.spec.stride
            try:
                result = self._load(sample, video, start, fps)
            except (VideoError, OSError) as exc:
                failures.append(Failure(str(video.path), str(exc)))
                continue
            result.failures = failures
            return result
        reasons = "; ".join(f"{f.path}: {f.reason}" for f in failures)
        raise RuntimeError(f"sample {sample}: {self.MAX_ATTEMPTS} clips in a row could not be read ({reasons})")

    def _load(self, sample: int, video: VideoInfo, start: int, fps: float) -> ClipSample:
        spec = self.spec
        key = None
        if self.cache is not None:
            key = self.cache.key(video.path, start, spec.frames, spec.stride, spec.height, spec.width,
                                 self.condition_frame)
            cached = self.cache.load(key)
            if cached is not None:
                return ClipSample(sample, str(video.path), start, cached.pop("fps", DEFAULT_FPS),
                                  cached.pop("motion_score", 0.0), key, cached=cached)
        pixels = read_clip(video.path, start, spec.frames, spec.stride, spec.height, spec.width)
        condition = None
        if self.condition_frame == "video" and start > 0:
            condition = read_clip(video.path, 0, 1, spec.stride, spec.height, spec.width)[0]
        return ClipSample(sample, str(video.path), start, fps, motion_score(pixels), key, pixels=pixels,
                          condition_pixels=condition)


def keep_list(samples):
    """Collate function: the trainer encodes sample by sample, so a batch is just the list."""
    return list(samples)


class RankBatches(torch.utils.data.Sampler):
    """Global sample numbers for one process, batch by batch, from micro-batch ``start_batch`` on:
    micro-batch ``p`` of process ``r`` is samples ``(p * world + r) * batch + 0..batch-1``."""

    def __init__(self, batch_size: int, rank: int, world_size: int, start_batch: int = 0):
        self.batch_size, self.rank, self.world_size, self.start_batch = batch_size, rank, world_size, start_batch

    def __iter__(self) -> Iterator[list[int]]:
        position = self.start_batch
        while True:
            first = (position * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))
            position += 1

    def __len__(self) -> int:  # endless; DataLoader only needs a number
        return 2**62


def clip_loader(dataset: ClipDataset, batch_size: int, rank: int, world_size: int, start_batch: int,
                num_workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=RankBatches(batch_size, rank, world_size, start_batch),
        num_workers=num_workers,
        collate_fn=keep_list,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
    )


def still_image(images: Sequence[Path], seed: int, number: int, height: int, width: int) -> torch.Tensor:
    """Still image number ``number`` of the image set (shuffled per pass, seeded)."""
    epoch, offset = divmod(number, len(images))
    order = torch.randperm(len(images), generator=generator(seed, "images", epoch))
    return load_image(images[int(order[offset])], height, width)


__all__ = [
    "VIDEO_SUFFIXES", "VideoEntry", "VideoInfo", "SkippedVideo", "read_metadata", "find_videos", "probe_video",
    "index_videos", "source_frames_needed", "ClipSpec", "ClipSample", "ClipDataset", "RankBatches", "clip_loader",
    "keep_list", "still_image", "derive_seed",
]
