"""One generation run: check everything once, plan it, sample, and hand every frame to a sink.

images -> :func:`condition_images` -> :func:`prepare_run` (settings, model limits, prefix, plan)
-> :meth:`GenerationRun.into` a sink: :class:`LatentSink` (latents), :class:`ImageSink` (decoded
frames) or :class:`Mp4Sink` (decoded and written while sampling). The ComfyUI nodes, the command
line and the benchmarks all parse their arguments and call this module, so each refuses exactly
what the others refuse, with the same message.

Modes: ``progressive`` (PA-VDM rolling window, any length); ``full_sequence`` (one clip, all
frames at one noise level: ordinary SVD/ExSVD sampling); ``replacement_without_noise`` /
``replacement_with_noise`` (windows of ``window + chunk`` frames whose first ``chunk`` frames are
the previous window's last, held clean or re-noised: PA-VDM Sec. 2.2, at the progressive
sampler's frames per call so the comparison is fair).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from . import samplers
from .conditioning import SVDCond
from .decoding import StreamingDecoder, decode_settings
from .frames import cover_crop
from .model import SVDModel
from .nonfinite import FiniteCheckedDenoiser
from .progress import ProgressCallback
from .problems import Problem, range_problem, raise_problem
from .schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW, get_sigmas_karras, window_problem
from .shapes import nearest_multiples
from .step_cache import DeepCacheDenoiser, DeepCacheSettings
from .vae import VAE_SCALE
from .video_io import DEFAULT_CRF, output_problem, write_latent_video

AUTO = "auto"
PROGRESSIVE = "progressive"
CONTEXT_WINDOWS = "context_windows"
FULL_SEQUENCE = "full_sequence"
REPLACEMENT_WITHOUT_NOISE = "replacement_without_noise"
REPLACEMENT_WITH_NOISE = "replacement_with_noise"
MODES = (AUTO, PROGRESSIVE, CONTEXT_WINDOWS, FULL_SEQUENCE, REPLACEMENT_WITHOUT_NOISE, REPLACEMENT_WITH_NOISE)
# Training-free settings for weights trained with one noise level per clip, as changes to the given
# settings. The partitioned ones are FIFO-Diffusion's (Kim et al. 2024, Sec. 4) in LongVid's terms:
# the window is doubled so that one call still holds about the given window's frames, in P=2
# partitions, or in P=4 quarters that each also see the quarter ahead.
TRAINING_FREE_OPTIONS = {
    "progressive": dict(mode=PROGRESSIVE),
    "partitioned": dict(mode=PROGRESSIVE, window_multiple=2, partitions=2),
    "partitioned_lookahead": dict(mode=PROGRESSIVE, window_multiple=2, partitions=4, lookahead=True),
    "context_windows": dict(mode=CONTEXT_WINDOWS),
    "replacement_with_noise": dict(mode=REPLACEMENT_WITH_NOISE),
}
# What `auto` runs on weights without a progressive fine-tuning record (SVD, SVD-XT, SVD-XT 1.1, the
# ExVideo release): the best of TRAINING_FREE_OPTIONS for the one-level model in bench_quality.py.
TRAINING_FREE = "replacement_with_noise"

# The longest video a run plans: 1,000,000 frames (11.6 hours at 24 fps). Planning the progressive sampler
# takes ~14 us a frame and its table grows with length, so a mistyped length fails here, not after hours.
MAX_FRAMES = 1_000_000
MAX_SEED = 2**64 - 1  # torch generators take 64-bit seeds (ComfyUI's seed widget has the same range)

SVD_SIZE_MULTIPLE = 64  # SVD: 8x VAE downscale, then the UNet halves the latent 3 times

BUNDLED_MODEL = Path(__file__).resolve().parent / "assets" / "longvid_small.safetensors"
DEFAULTS_KEY = "longvid.defaults"  # a model file's recommended settings (JSON in its metadata)
# Settings for real SVD-XT weights (ComfyUI's SVD template and ExVideo's example); decode_window /
# decode_overlap None: the decoder's defaults.
SVD_DEFAULTS = dict(width=1024, height=576, frames=240, window=DEFAULT_WINDOW, chunk=DEFAULT_CHUNK,
                    steps=DEFAULT_STEPS, cfg=samplers.DEFAULT_CFG, min_cfg=samplers.DEFAULT_MIN_CFG, fps=6,
                    motion_bucket_id=127, noise_aug_strength=0.02, output_fps=10, decode_window=None,
                    decode_overlap=None, context_sigma=None)

Keyframes = list[tuple[int, SVDCond]]


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: ``frames`` new frames (after any prefix) in ``mode``. ``context_sigma``
    (progressive only; None or 0: clean) is for models trained with context noise. ``partitions``
    and ``lookahead``: progressive rows split for one-level weights (:func:`samplers.iter_progressive`).
    ``context_overlap``: frames shared by context windows of ``window + chunk`` frames (None: a
    quarter of a window, as ComfyUI's 16/4). ``cache_interval``: calls that may reuse the deep
    features of the last full call on the same frames (:mod:`longvid_core.step_cache`; 0: off)."""

    frames: int
    mode: str = AUTO
    window: int = DEFAULT_WINDOW
    chunk: int = DEFAULT_CHUNK
    steps: int = DEFAULT_STEPS
    cfg: float = samplers.DEFAULT_CFG
    min_cfg: float = samplers.DEFAULT_MIN_CFG
    seed: int = 0
    context_sigma: float | None = None
    partitions: int = 1
    lookahead: bool = False
    context_overlap: int | None = None
    cache_interval: int = 0

    @property
    def context_length(self) -> int:
        return self.window + self.chunk

    @property
    def frames_per_call(self) -> int:
        """The most frames one denoiser call holds (before guidance doubles the batch)."""
        if self.mode == PROGRESSIVE:
            group = self.window // max(1, self.partitions)
            return max(group + self.chunk, 2 * group if self.lookahead else 0)
        return self.context_length  # context windows; replacement windows hold window new + chunk carried

    @property
    def overlap(self) -> int:
        return self.context_length // 4 if self.context_overlap is None else self.context_overlap

    def describe(self) -> str:
        cache = f", deep cache {self.cache_interval}" if self.cache_interval else ""
        return self._describe_sampler() + cache

    def _describe_sampler(self) -> str:
        if self.mode == PROGRESSIVE:
            split = f", {self.partitions} partitions" if self.partitions > 1 else ""
            split += ", lookahead" if self.lookahead else ""
            return f"progressive: window {self.window}, chunk {self.chunk}, {self.steps} steps{split}"
        if self.mode == CONTEXT_WINDOWS:
            return f"context windows of {self.context_length} frames overlapping by {self.overlap}, {self.steps} steps"
        return f"{self.mode}: window {self.window}, chunk {self.chunk}, {self.steps} steps"


@dataclass(frozen=True)
class Schedule:
    """The sampling settings a LongVid Settings node makes (ComfyUI type ``LONGVID_SCHEDULE``): the
    fields of :class:`SamplingSettings` that say how frames are scheduled, with the same names,
    defaults and meaning. What a run adds to it (frames, cfg, seed) stays with the sampler."""

    mode: str = SamplingSettings.mode
    window: int = SamplingSettings.window
    chunk: int = SamplingSettings.chunk
    steps: int = SamplingSettings.steps
    context_sigma: float | None = SamplingSettings.context_sigma
    partitions: int = SamplingSettings.partitions
    lookahead: bool = SamplingSettings.lookahead
    context_overlap: int | None = SamplingSettings.context_overlap
    cache_interval: int = SamplingSettings.cache_interval

    def problem(self) -> Problem | None:
        """What is wrong with this schedule alone (:func:`settings_problem`), or None."""
        return settings_problem(self.mode, None, self.window, self.chunk, self.steps, None, None, self.context_sigma,
                                self.partitions, self.lookahead, self.context_overlap, self.cache_interval)

    def describe(self) -> str:
        return SamplingSettings(1, **vars(self)).describe()


def with_schedule(settings: SamplingSettings, schedule: Schedule | None) -> SamplingSettings:
    """``settings`` with every field of ``schedule`` replacing its own (None: unchanged)."""
    return settings if schedule is None else replace(settings, **vars(schedule))


def resolve_auto(model: SVDModel, settings: SamplingSettings) -> tuple[SamplingSettings, str]:
    """``auto`` made concrete for this model, and why: as trained for weights that LongVid's trainer
    fine-tuned progressively; :data:`TRAINING_FREE` for all others. Other modes pass unchanged."""
    if settings.mode != AUTO:
        return settings, settings.describe()
    trained = getattr(model, "trained_for", None)
    if trained is not None and trained.progressive:
        chosen = replace(settings, mode=PROGRESSIVE, window=trained.window, chunk=trained.chunk, steps=trained.steps,
                         partitions=1, lookahead=False)
        return chosen, f"auto -> {chosen.describe()} (the model was fine-tuned progressively)"
    # a grown layout comes from the one given: refuse a bad one as given
    if TRAINING_FREE_OPTIONS[TRAINING_FREE]["mode"] == PROGRESSIVE:
        raise_problem(settings_problem(PROGRESSIVE, window=settings.window, chunk=settings.chunk, steps=settings.steps))
    chosen = training_free(settings, TRAINING_FREE)
    why = "trained with one noise level per clip" if trained is not None else "no progressive fine-tuning recorded"
    return chosen, f"auto -> {chosen.describe()} ({why})"


def training_free(settings: SamplingSettings, name: str) -> SamplingSettings:
    """``settings`` as the training-free setting ``name`` of :data:`TRAINING_FREE_OPTIONS`. A grown
    window gets its steps rounded up to a multiple of its chunks and as many of the partitions as
    divide them (a short window gets fewer)."""
    option = dict(TRAINING_FREE_OPTIONS[name])
    window = settings.window * option.pop("window_multiple", 1)
    partitions = option.pop("partitions", 1)
    chunks = window // settings.chunk if settings.chunk and window % settings.chunk == 0 else 0
    steps = settings.steps
    if chunks and option["mode"] == PROGRESSIVE:  # otherwise the settings check explains the layout
        steps = -(-settings.steps // chunks) * chunks
        partitions = max(p for p in range(1, partitions + 1) if chunks % p == 0)
    return replace(settings, window=window, steps=steps, partitions=partitions,
                   lookahead=option.pop("lookahead", False), **option)


# ---------------------------------------------------------------------------------------------
# Checks: each returns the first problem as a message that says what to change, or None


def settings_problem(mode=None, frames=None, window=None, chunk=None, steps=None, cfg=None, min_cfg=None,
                     context_sigma=None, partitions=None, lookahead=None, context_overlap=None,
                     cache_interval=None, seed=None) -> Problem | None:
    """What is wrong with these settings; a value not known yet (None, e.g. a linked node input)
    is skipped. ``auto`` is checked once it is resolved for the model (:func:`prepare_run`)."""
    if mode is not None and mode not in MODES:
        return Problem("mode", f"one of {', '.join(MODES)}", repr(mode))
    for name, value, smallest, largest in (
            ("frames", frames, 1, MAX_FRAMES), ("window", window, 1, None), ("chunk", chunk, 1, None),
            ("steps", steps, 1, None), ("cfg", cfg, 0, None), ("min_cfg", min_cfg, 0, None),
            ("context_sigma", context_sigma, 0, None), ("partitions", partitions, 1, None),
            ("context_overlap", context_overlap, 0, None), ("cache_interval", cache_interval, 0, None),
            ("seed", seed, 0, MAX_SEED)):
        problem = range_problem(name, value, smallest, largest)
        if problem:
            return problem
    if mode == PROGRESSIVE and None not in (window, chunk, steps):
        problem = window_problem(window, chunk, steps)
        if problem:
            return problem
        chunks = window // chunk
        if partitions is not None and chunks % partitions:
            options = [p for p in range(1, chunks + 1) if chunks % p == 0]
            return Problem("partitions", f"a divisor of the window's {chunks} chunks (window {window} / chunk "
                           f"{chunk}) so that every call holds whole chunks", partitions, f"use one of {options}")
    if mode == CONTEXT_WINDOWS and None not in (window, chunk, context_overlap) and context_overlap >= window + chunk:
        return Problem("context_overlap", f"fewer frames than the context window of window + chunk = {window + chunk}",
                       context_overlap, f"use at most {window + chunk - 1}")
    for name, value, used, off, fix in (
            ("context_sigma", context_sigma, "context noise", "0", "set it to 0"),
            ("partitions", partitions if partitions != 1 else None, "partitioning", "1", "set it to 1"),
            ("lookahead", lookahead or None, "lookahead", "off", "turn it off")):
        if value and mode not in (None, PROGRESSIVE, AUTO):
            return Problem(name, f"{off} outside the progressive mode ({used} is for progressive only)",
                           f"{value} with mode {mode!r}", f"{fix} or use progressive")
    return None


def model_problem(model: SVDModel, settings: SamplingSettings, prefix_frames: int = 0,
                  keyframe_starts: Sequence[int] = (0,)) -> Problem | None:
    """What this model cannot run: clips past what it was trained on or its ExVideo table holds,
    keyframes past the end of the video."""
    limit = model.max_frames
    mode, frames = settings.mode, settings.frames
    if mode in (FULL_SEQUENCE, CONTEXT_WINDOWS) and prefix_frames:
        return Problem("mode", "progressive or a replacement mode to extend a video (a prefix is given)", mode,
                       f"{mode} mode cannot extend a video: use the progressive or a replacement mode, or give no "
                       "prefix")
    if mode == FULL_SEQUENCE:
        if frames > model.trained_frames:
            what = (f"this ExVideo extension's frame-position table holds {limit} frames" if limit
                    else f"plain SVD was trained on clips of {model.trained_frames} frames")
            return Problem("frames", f"at most {model.trained_frames} in full_sequence mode, which denoises all "
                           f"frames as one clip ({what})", frames,
                           "use fewer frames, or the progressive mode for longer videos")
    elif limit is not None and settings.frames_per_call > limit and (settings.partitions > 1 or settings.lookahead):
        return Problem("window", f"at most {limit} frames per call (this ExVideo extension's frame-position table)",
                       f"{settings.frames_per_call} frames per call with {settings.describe()}",
                       "use a smaller window or more partitions")
    elif limit is not None and settings.frames_per_call > limit:
        window, chunk = settings.window, settings.chunk
        return Problem("window", f"window + chunk <= {limit}, the frames this ExVideo extension's frame-position "
                       f"table holds (the {mode} sampler shows the model window + chunk frames per call)",
                       f"{window} + {chunk} = {window + chunk}", f"use window <= {limit - chunk} (a multiple of chunk)")
    total = prefix_frames + frames
    late = [start for start in keyframe_starts if start >= total]
    if late:
        return Problem("keyframe_starts", f"starts within the video's frames 0..{total - 1} ({prefix_frames} "
                       f"prefix + {frames} new)", f"{late} past the end", "lower them or generate more frames")
    return None


def size_problem(width, height, multiple: int = SVD_SIZE_MULTIPLE, min_size: int | None = None,
                 extended: bool = False) -> Problem | None:
    """Width and height must be multiples of ``multiple`` (64 for SVD) and, for an ExVideo model,
    at least ``min_size``."""
    for name, value in (("width", width), ("height", height)):
        if value is not None and value % multiple:
            return Problem(name, f"a multiple of {multiple} (the VAE's downscale times the UNet's halvings; 64 "
                           "for SVD)", value, f"use {nearest_multiples(value, multiple)}")
    if min_size is not None and None not in (width, height) and min(width, height) < min_size:
        what = "an ExVideo-extended model's 3-D convolution" if extended else "this model"
        name = "width" if width < min_size else "height"
        return Problem(name, f"width and height of at least {min_size} px for {what}", f"{width}x{height}",
                       f"use width and height >= {min_size}")
    return None


def check_size(model: SVDModel, width: int, height: int) -> None:
    raise_problem(size_problem(width, height, model.size_multiple, model.min_size, model.max_frames is not None))


# ---------------------------------------------------------------------------------------------
# Conditioning and ComfyUI's LATENT layout


def condition_images(model: SVDModel, images: torch.Tensor, width: int, height: int, starts: Sequence[int] = (0,),
                     *, fps: int = 6, motion_bucket_id: int = 127, noise_aug_strength: float = 0.02, seed: int = 0,
                     callback: ProgressCallback | None = None) -> tuple[Keyframes, torch.Tensor]:
    """Images ``[K, H, W, 3]`` (0..1) -> keyframes ``[(start_i, SVDCond)]`` and the images as fitted
    (scaled to cover ``width x height``, centre-cropped). Image i is noise-augmented with seed
    ``seed + i``. ``callback(None)`` runs before each image (cancel). Keyframes stay where the
    image encoder and VAE are."""
    if len(starts) != images.shape[0]:
        example = ", ".join(str(48 * i) for i in range(images.shape[0]))
        raise_problem(Problem("keyframe_starts", f"one start frame per image of the batch ({images.shape[0]})",
                       f"{len(starts)} start frame(s) {list(starts)}", f"e.g. '{example}'"))
    check_size(model, width, height)
    fitted = cover_crop(images, width, height)
    keyframes = []
    with torch.no_grad():
        for i, start in enumerate(starts):
            if callback is not None:
                callback(None)
            cond = model.encode_image(fitted[i:i + 1], fps=fps, motion_bucket_id=motion_bucket_id,
                                      noise_aug_strength=noise_aug_strength, seed=seed + i)
            keyframes.append((int(start), cond))
    return keyframes, fitted


def latents_from_comfy(latent, name: str = "samples") -> torch.Tensor:
    """ComfyUI LATENT (``{"samples": [F, 4, h, w]}``, unscaled as VAEEncode makes it) -> the
    samplers' scaled latents ``[1, F, 4, h, w]`` float32."""
    samples = latent["samples"] if isinstance(latent, dict) else latent
    if not isinstance(samples, torch.Tensor) or samples.dim() != 4 or samples.shape[1] != 4:
        found = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"{name}: expected LATENT samples [frames, 4, h, w]; found {found}")
    return samples.unsqueeze(0).float() * VAE_SCALE


def latents_to_comfy(latents: torch.Tensor) -> dict:
    """Scaled latents ``[1, F, 4, h, w]`` -> ComfyUI LATENT (unscaled ``[F, 4, h, w]`` on the CPU)."""
    return {"samples": (latents[0] / VAE_SCALE).cpu()}


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class GenerationRun:
    """A checked, planned run; nothing has been sampled yet. ``prefix``: scaled latents
    ``[1, P, 4, h, w]`` that the video starts with, or None. Tensors move to the model's device
    only when sampling starts (inside ComfyUI the weights arrive there just before)."""

    model: SVDModel
    settings: SamplingSettings
    keyframes: Keyframes
    prefix: torch.Tensor | None
    plan: samplers.SamplingPlan
    frame_shape: tuple[int, int, int, int] = field(repr=False)
    chosen: str = ""  # the settings in words (what `auto` chose, and why)
    cache: DeepCacheDenoiser | None = field(default=None, repr=False)  # with cache_interval: its counts

    @property
    def prefix_frames(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[1]

    @property
    def total_frames(self) -> int:
        return self.prefix_frames + self.settings.frames

    def frames(self, callback: ProgressCallback | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """Every frame of the video in order, ``(index, latent[1, 4, h, w])``: the prefix's, then
        the sampled ones as the sampler finishes them."""
        for i in range(self.prefix_frames):
            yield i, self.prefix[:, i]
        yield from self._sampler(callback)

    def into(self, sink, callback: ProgressCallback | None = None):
        """Sample into ``sink`` (sampling and decoding both report to ``callback``); the sink's result."""
        with torch.no_grad():
            return sink.consume(self.frames(callback), self.total_frames, callback, self.model)

    def _sampler(self, callback):
        s, model = self.settings, self.model
        common = dict(seed=s.seed, cfg=s.cfg, min_cfg=s.min_cfg, callback=callback, dtype=torch.float32,
                      device=model.device)
        sigmas = get_sigmas_karras(s.steps, device=model.device)
        keyframes = [(start, cond.to(model.device)) for start, cond in self.keyframes]  # where the UNet is now
        denoise = model.denoise
        if s.cache_interval:
            cache = DeepCacheSettings(interval=s.cache_interval)
            denoise = self.cache = DeepCacheDenoiser(model, cache, cache.threshold(sigmas))
        denoise = FiniteCheckedDenoiser(denoise, model)  # the first NaN/Inf stops the run, with its cause
        args = (denoise, keyframes, self.total_frames, self.frame_shape, sigmas)
        if s.mode == PROGRESSIVE:
            return samplers.iter_progressive(*args, window=s.window, chunk=s.chunk, prefix=self.prefix,
                                             context_sigma=s.context_sigma or None, partitions=s.partitions,
                                             lookahead=s.lookahead, **common)
        if s.mode == CONTEXT_WINDOWS:
            return samplers.iter_context_windows(*args, length=s.context_length, overlap=s.overlap, **common)
        if s.mode == FULL_SEQUENCE:
            return samplers.iter_full_sequence(*args, **common)
        return samplers.iter_replacement(*args, window=s.window + s.chunk, condition_frames=s.chunk,
                                         renoise_condition=s.mode == REPLACEMENT_WITH_NOISE, prefix=self.prefix,
                                         **common)


def check_settings(settings: SamplingSettings) -> None:
    """Raise ValueError saying what to change unless the settings alone are possible."""
    s = settings
    raise_problem(settings_problem(s.mode, s.frames, s.window, s.chunk, s.steps, s.cfg, s.min_cfg, s.context_sigma,
                            s.partitions, s.lookahead, s.context_overlap, s.cache_interval, s.seed))


def plan_sampling(settings: SamplingSettings, prefix_frames: int = 0) -> samplers.SamplingPlan:
    """The exact cost of sampling with checked ``settings``."""
    s, total = settings, prefix_frames + settings.frames
    if s.mode == PROGRESSIVE:
        return samplers.plan_progressive(total, window=s.window, chunk=s.chunk, steps=s.steps,
                                         prefix_frames=prefix_frames, partitions=s.partitions, lookahead=s.lookahead)
    if s.mode == CONTEXT_WINDOWS:
        return samplers.plan_context_windows(total, length=s.context_length, overlap=s.overlap, steps=s.steps)
    if s.mode == FULL_SEQUENCE:
        return samplers.plan_full_sequence(total, steps=s.steps)
    return samplers.plan_replacement(total, window=s.window + s.chunk, condition_frames=s.chunk, steps=s.steps,
                                     prefix_frames=prefix_frames)


def prepare_run(model: SVDModel, cond, settings: SamplingSettings, prefix: torch.Tensor | None = None) -> GenerationRun:
    """Check the settings, the model's limits, the conditioning and the prefix, all before any
    model call, and plan the run. ``cond``: one SVDCond or keyframes ``[(start, SVDCond), ...]``."""
    check_settings(settings)  # the settings alone, before anything touches the model
    settings, chosen = resolve_auto(model, settings)
    check_settings(settings)  # auto made concrete
    keyframes = [(0, cond)] if isinstance(cond, SVDCond) else [(int(start), c) for start, c in cond]
    if not keyframes:
        raise ValueError("cond: expected one SVDCond or at least one (start_frame, SVDCond) keyframe; got none")
    first = keyframes[0][1]
    frame_shape = (first.batch_size, model.vae.config.latent_channels, *first.concat_latent.shape[-2:])
    prefix = _checked_prefix(prefix, frame_shape)
    prefix_frames = 0 if prefix is None else prefix.shape[1]
    raise_problem(model_problem(model, settings, prefix_frames, [start for start, _ in keyframes]))
    plan = plan_sampling(settings, prefix_frames)
    return GenerationRun(model, settings, keyframes, prefix, plan, frame_shape, chosen)


def generate(model: SVDModel, cond, settings: SamplingSettings, sink, *, prefix: torch.Tensor | None = None,
             callback: ProgressCallback | None = None):
    """:func:`prepare_run` then :meth:`GenerationRun.into` ``sink``."""
    return prepare_run(model, cond, settings, prefix).into(sink, callback)


def _checked_prefix(prefix, frame_shape) -> torch.Tensor | None:
    if prefix is None:
        return None
    if not isinstance(prefix, torch.Tensor) or prefix.dim() != 5 or prefix.shape[2] != frame_shape[1]:
        found = tuple(prefix.shape) if isinstance(prefix, torch.Tensor) else type(prefix).__name__
        raise ValueError(f"prefix: expected scaled latents [1, frames, {frame_shape[1]}, h, w]; found {found}")
    if tuple(prefix.shape[-2:]) != tuple(frame_shape[-2:]):
        raise ValueError(
            f"prefix latents are {prefix.shape[-2]}x{prefix.shape[-1]} but the conditioning is "
            f"{frame_shape[-2]}x{frame_shape[-1]} (latent pixels): encode the prefix frames at the same width and height"
        )
    if prefix.shape[0] != frame_shape[0]:
        raise ValueError(f"prefix: batch {prefix.shape[0]} but the conditioning's is {frame_shape[0]}")
    if prefix.shape[1] == 0:
        return None
    return prefix.float()


# ---------------------------------------------------------------------------------------------
# Sinks: where the frames of a run go. ``consume(frames, total, callback, model) -> result``


class LatentSink:
    """Collects the latents: ``[1, N, 4, h, w]`` (scaled)."""

    def consume(self, frames: Iterable[tuple[int, torch.Tensor]], total: int, callback, model) -> torch.Tensor:
        out = None
        for index, latent in frames:
            if out is None:
                out = latent.new_empty((latent.shape[0], total, *latent.shape[1:]))
            out[:, index] = latent
        return out


@dataclass
class ImageSink:
    """Decodes as frames arrive: frames ``[1, N, H, W, 3]`` in 0..1 on ``output_device``."""

    window: int | None = None
    overlap: int | None = None
    output_device: str = "cpu"

    def __post_init__(self):
        decode_settings(self.window, self.overlap)  # refuse a bad window before any sampling

    def consume(self, frames, total: int, callback, model) -> torch.Tensor:
        decoder = StreamingDecoder(model.vae, self.window, self.overlap, self.output_device, callback, total)
        pieces = [decoder.push(latent) for _, latent in frames] + [decoder.finish()]
        return torch.cat([p for p in pieces if p is not None], dim=1)


@dataclass
class Mp4Sink:
    """Decodes and writes every frame to an mp4 as it arrives (nothing of the video is held); the
    number of frames written. The file is written as ``<name>.partial.mp4`` and takes its name when
    complete; a cancelled or failed run leaves that partial file, playable (:mod:`video_io`).
    ``writer``: the :class:`~longvid_core.video_io.VideoWriter` once opened (its ``kept_path`` and
    ``frames_written`` say what a run left)."""

    path: Path
    fps: float
    crf: int = DEFAULT_CRF
    window: int | None = None
    overlap: int | None = None
    on_frames: object = None  # on_frames(first_index, frames[n, H, W, 3]) for every batch written
    writer: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        decode_settings(self.window, self.overlap)
        raise_problem(output_problem(self.path))  # before any sampling: a run must not end on an unwritable path

    def consume(self, frames, total: int, callback, model) -> int:
        return write_latent_video(model.vae, (latent for _, latent in frames), self.path, self.fps,
                                  window=self.window, overlap=self.overlap, crf=self.crf, callback=callback,
                                  frames_total=total, on_frames=self.on_frames,
                                  on_open=lambda writer: setattr(self, "writer", writer))


def decode_into(model: SVDModel, latents: torch.Tensor, sink, callback: ProgressCallback | None = None):
    """Scaled latents ``[1, N, 4, h, w]`` (already sampled) into a decoding sink."""
    frames = ((i, latents[:, i]) for i in range(latents.shape[1]))  # moved to the VAE window by window
    with torch.no_grad():
        return sink.consume(frames, latents.shape[1], callback, model)


# ---------------------------------------------------------------------------------------------
# A model file's recommended settings


def recommended_settings(path) -> dict:
    """Settings stored in a LongVid model file's metadata (:data:`DEFAULTS_KEY`), else SVD-XT's."""
    from .checkpoint_io import open_tensors

    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        meta = getattr(open_tensors(path), "metadata", {}) or {}
        if DEFAULTS_KEY in meta:
            return {**SVD_DEFAULTS, **json.loads(meta[DEFAULTS_KEY])}
    return dict(SVD_DEFAULTS)


__all__ = [
    "AUTO", "BUNDLED_MODEL", "CONTEXT_WINDOWS", "FULL_SEQUENCE", "TRAINING_FREE", "TRAINING_FREE_OPTIONS",
    "resolve_auto", "training_free", "MODES", "PROGRESSIVE", "REPLACEMENT_WITHOUT_NOISE", "REPLACEMENT_WITH_NOISE",
    "GenerationRun", "ImageSink", "LatentSink", "Mp4Sink", "SamplingSettings", "Schedule", "with_schedule", "check_size", "condition_images",
    "check_settings", "decode_into", "generate", "latents_from_comfy", "latents_to_comfy", "model_problem", "plan_sampling",
    "prepare_run", "recommended_settings", "settings_problem", "size_problem",
]
