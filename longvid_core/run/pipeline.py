"""One generation run: check everything once, plan it, sample, and hand every frame to a sink.

images -> :func:`condition_images` -> :func:`prepare_run` (settings, model limits, prefix, plan)
-> :meth:`GenerationRun.into` a sink: :class:`LatentSink` (latents), :class:`ImageSink` (decoded
frames) or :class:`Mp4Sink` (decoded and written while sampling). The ComfyUI nodes, the command
line and the benchmarks all parse their arguments and call this module, so each refuses exactly
what the others refuse, with the same message.

The settings, their checks and defaults are :mod:`.settings`; every name there is importable
from here too (``pipeline.SamplingSettings``), as the nodes and the command line use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from .. import sampling
from ..networks.conditioning import SVDCond
from ..networks.decoding import StreamingDecoder, decode_settings
from ..networks.model import SVDModel
from ..networks.nonfinite import FiniteCheckedDenoiser
from ..networks.vae import VAE_SCALE, vae_device_dtype
from ..problems import Problem, raise_problem
from ..progress import ProgressCallback
from ..sampling.schedulers import scheduled_sigmas
from ..sampling.step_rules import STEP_RULES
from ..sampling.step_cache import DeepCacheDenoiser, DeepCacheSettings
from .frames import cover_crop, encode_frames
# the settings' names are the pipeline's too (pipeline.SamplingSettings, pipeline.AUTO, ...)
from .modes import DEFAULT_SAMPLER, DEFAULT_SCHEDULER, SAMPLER_NAMES, SCHEDULER_NAMES
from .settings import (AUTO, BUNDLED_MODEL, CONTEXT_WINDOWS, DEFAULTS_KEY, FULL_SEQUENCE, MAX_FRAMES,
                       MAX_SEED, MODES, PROGRESSIVE, REPLACEMENT_WITHOUT_NOISE, REPLACEMENT_WITH_NOISE,
                       SVD_DEFAULTS, SVD_SIZE_MULTIPLE, TRAINING_FREE, TRAINING_FREE_OPTIONS,
                       SamplingSettings, Schedule, check_settings, check_size, model_problem,
                       recommended_settings, resolve_auto, settings_notes, settings_problem, sigmas_problem, size_problem,
                       training_free, with_schedule)
from .video_io import DEFAULT_CRF, output_problem, write_latent_video

Keyframes = list[tuple[int, SVDCond]]


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
    plan: sampling.SamplingPlan
    frame_shape: tuple[int, int, int, int] = field(repr=False)
    chosen: str = ""  # the settings in words (what `auto` chose, and why)
    cache: DeepCacheDenoiser | None = field(default=None, repr=False)  # with cache_interval: its counts
    guides: list[sampling.Guide] = field(default_factory=list, repr=False)  # frames the video passes through
    loop: bool = False  # one more frame is sampled, held to the first, and not handed out
    notes: list[str] = field(default_factory=list)  # warnings about the settings (settings_notes)

    @property
    def sampled_frames(self) -> int:
        """The frames the sampler walks: the video's, and with ``loop`` the one that closes it."""
        return self.total_frames + int(self.loop)

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
        for index, latent in self._sampler(callback):
            if index < self.total_frames:  # a loop's closing frame is the first one again
                yield index, latent

    def into(self, sink, callback: ProgressCallback | None = None):
        """Sample into ``sink`` (sampling and decoding both report to ``callback``); the sink's result."""
        with torch.no_grad():
            return sink.consume(self.frames(callback), self.total_frames, callback, self.model)

    def _sampler(self, callback):
        s, model = self.settings, self.model
        common = dict(seed=s.seed, cfg=s.cfg, min_cfg=s.min_cfg, callback=callback, dtype=torch.float32,
                      device=model.device, guides=self.guides, step_rule=step_rule_of(s))
        sigmas = (scheduled_sigmas(s.scheduler, s.steps, device=model.device) if s.sigmas is None
                  else torch.tensor(s.sigmas, dtype=torch.float32, device=model.device))
        keyframes = [(start, cond.to(model.device)) for start, cond in self.keyframes]  # where the UNet is now
        denoise = model.denoise
        if s.cache_interval:
            cache = DeepCacheSettings(interval=s.cache_interval)
            denoise = self.cache = DeepCacheDenoiser(model, cache, cache.threshold(sigmas))
        denoise = FiniteCheckedDenoiser(denoise, model)  # the first NaN/Inf stops the run, with its cause
        args = (denoise, keyframes, self.sampled_frames, self.frame_shape, sigmas)
        if s.mode == PROGRESSIVE:
            return sampling.iter_progressive(*args, window=s.window, chunk=s.chunk, prefix=self.prefix,
                                             context_sigma=s.context_sigma or None, partitions=s.partitions,
                                             lookahead=s.lookahead, **common)
        if s.mode == CONTEXT_WINDOWS:
            return sampling.iter_context_windows(*args, length=s.context_length, overlap=s.overlap, **common)
        if s.mode == FULL_SEQUENCE:
            return sampling.iter_full_sequence(*args, **common)
        return sampling.iter_replacement(*args, window=s.window + s.chunk, condition_frames=s.chunk,
                                         renoise_condition=s.mode == REPLACEMENT_WITH_NOISE, prefix=self.prefix,
                                         **common)


def step_rule_of(settings: SamplingSettings):
    """LongVid's step rule of ``sampler_name``, or core's own sampler function where one is given."""
    return settings.schedule_sampler if settings.schedule_sampler is not None else STEP_RULES[settings.sampler_name]


def plan_sampling(settings: SamplingSettings, prefix_frames: int = 0,
                  guides: Sequence[sampling.Guide] = ()) -> sampling.SamplingPlan:
    """The exact cost of sampling with checked ``settings`` (and ``guides``: calls whose frames they
    all hold are skipped)."""
    s, total = settings, prefix_frames + settings.frames
    common = dict(steps=s.steps, guides=guides, step_rule=step_rule_of(s))
    if s.mode == PROGRESSIVE:
        return sampling.plan_progressive(total, window=s.window, chunk=s.chunk, prefix_frames=prefix_frames,
                                         partitions=s.partitions, lookahead=s.lookahead, **common)
    if s.mode == CONTEXT_WINDOWS:
        return sampling.plan_context_windows(total, length=s.context_length, overlap=s.overlap, **common)
    if s.mode == FULL_SEQUENCE:
        return sampling.plan_full_sequence(total, **common)
    return sampling.plan_replacement(total, window=s.window + s.chunk, condition_frames=s.chunk,
                                     prefix_frames=prefix_frames, **common)


def prepare_run(model: SVDModel, cond, settings: SamplingSettings, prefix: torch.Tensor | None = None,
                guides: Sequence[sampling.Guide] = (), loop_latent: torch.Tensor | None = None) -> GenerationRun:
    """Check the settings, the model's limits, the conditioning, the prefix and the guides, all
    before any model call, and plan the run. ``cond``: one SVDCond or keyframes ``[(start,
    SVDCond), ...]``. ``guides``: frames the video passes through (:mod:`longvid_core.sampling.guides`).
    ``loop_latent`` (scaled ``[B, 4, h, w]``, e.g. the first picture's): the video loops; its first
    frame (without a prefix) and one frame past its end are held to it, and that extra frame is
    sampled but not handed out, so the last frame leads into the first without a seam."""
    check_settings(settings)  # the settings alone, before anything touches the model
    keyframes = [(0, cond)] if isinstance(cond, SVDCond) else [(int(start), c) for start, c in cond]
    if not keyframes:
        raise ValueError("cond: expected one SVDCond or at least one (start_frame, SVDCond) keyframe; got none")
    first = keyframes[0][1]
    frame_shape = (first.batch_size, model.vae.config.latent_channels, *first.concat_latent.shape[-2:])
    prefix = _checked_prefix(prefix, frame_shape)
    prefix_frames = 0 if prefix is None else prefix.shape[1]
    settings, chosen = resolve_auto(model, settings, refine=is_refine(guides, prefix_frames, settings.frames))
    check_settings(settings)  # auto made concrete
    loop = loop_latent is not None
    sampled = replace(settings, frames=settings.frames + 1) if loop else settings
    raise_problem(model_problem(model, sampled, prefix_frames, [start for start, _ in keyframes]))
    guides = list(guides)
    if loop:
        raise_problem(loop_problem(settings, loop_latent, frame_shape))
        closing = prefix[:, 0] if prefix is not None else loop_latent
        # held like any guide of method auto (progressive: shown clean, so the window sees where it must arrive)
        guides += ([] if prefix is not None else [sampling.Guide(0, loop_latent, method="auto")]) + [
            sampling.Guide(prefix_frames + settings.frames, closing, method="auto")]
    trained = getattr(model, "trained_for", None)
    if trained is not None and trained.guide_frames > 0:  # trained to see clean frames anywhere: auto shows them so
        guides = [replace(g, method=sampling.guides.CLEAN) if g.method == sampling.guides.AUTO else g for g in guides]
    raise_problem(sampling.guides_problem(guides, prefix_frames + sampled.frames, prefix_frames, frame_shape))
    plan = plan_sampling(sampled, prefix_frames, guides)
    return GenerationRun(model, settings, keyframes, prefix, plan, frame_shape, chosen, guides=guides, loop=loop,
                         notes=settings_notes(model, settings))


def is_refine(guides: Sequence[sampling.Guide], first_frame: int, frames: int) -> bool:
    """Every sampled frame (``first_frame ..``, ``frames`` of them) starts from a guide below
    strength 1: a refine pass (``run/cascade.py``), which ``auto`` runs one level per call."""
    weak = {g.frame for g in guides if isinstance(g, sampling.Guide) and isinstance(g.strength, (int, float))
            and 0 < g.strength < 1}  # anything else is refused, with its reason, by guides_problem below
    return frames > 0 and all(frame in weak for frame in range(first_frame, first_frame + frames))


def loop_problem(settings: SamplingSettings, loop_latent, frame_shape) -> Problem | None:
    """A loop must be longer than one call's window (else it repeats inside a call) and its latent
    must be the video's shape."""
    if settings.mode != FULL_SEQUENCE and settings.frames < settings.context_length:
        return Problem("frames", f"at least window + chunk = {settings.context_length} for a loop (a loop shorter "
                       "than a window repeats inside one call)", settings.frames)
    if not isinstance(loop_latent, torch.Tensor) or tuple(loop_latent.shape) != tuple(frame_shape):
        found = tuple(loop_latent.shape) if isinstance(loop_latent, torch.Tensor) else type(loop_latent).__name__
        return Problem("loop", f"the first picture's latent, shape {tuple(frame_shape)}", found)
    return None


def guides_from_images(model: SVDModel, images: torch.Tensor, frames: Sequence[int], strengths: Sequence[float],
                       width: int, height: int, *, method: str = "hold", anchors_like: SVDCond | None = None,
                       seed: int = 0) -> tuple[list[sampling.Guide], list[str]]:
    """Pictures ``[K, H, W, 3]`` (0..1) -> guides at ``frames`` with ``strengths`` and ``method``
    (:class:`~longvid_core.sampling.Guide`), each picture fitted to ``width x height`` as
    conditioning images are (:func:`cover_crop`) and encoded by the VAE; and a note for every
    picture that had to be cropped to fit. With ``anchors_like`` (the run's cond) each strength-1
    guide of method ``time_reversal`` or ``auto`` also carries its picture's cond, made with the
    same fps, motion bucket and noise augmentation (picture i noised with ``seed + i``), for Time
    Reversal Fusion (:mod:`longvid_core.sampling.time_reversal`)."""
    if not len(frames) == len(strengths) == images.shape[0]:
        raise_problem(Problem("guide frames", f"one frame index and one strength per picture ({images.shape[0]})",
                              f"{len(frames)} frame(s), {len(strengths)} strength(s)"))
    check_size(model, width, height)
    notes = []
    for i in range(images.shape[0]):
        h, w = images.shape[1:3]
        if h * width != w * height:
            notes.append(f"guide picture {i + 1} ({w}x{h}) was fitted to {width}x{height} as the conditioning "
                         "image is: centre-cropped to the aspect ratio, then resized")
    fitted = cover_crop(images, width, height)
    conds = [None] * len(frames)
    with torch.no_grad():
        vae_device = vae_device_dtype(model.vae)[0]  # inside ComfyUI the VAE may sit apart from the UNet
        latents = encode_frames(model.vae, fitted.to(vae_device))
        if anchors_like is not None and method in ("time_reversal", "auto"):
            fps, motion_bucket_id, noise_aug_strength = anchors_like.added_time_ids[0].tolist()
            conds = [model.encode_image(fitted[i:i + 1], fps=fps + 1, motion_bucket_id=motion_bucket_id,
                                        noise_aug_strength=noise_aug_strength, seed=seed + i)
                     if strength == 1 else None for i, strength in enumerate(strengths)]
    return [sampling.Guide(int(frame), latents[:, i].float().cpu(), float(strength), conds[i], method)
            for i, (frame, strength) in enumerate(zip(frames, strengths))], notes


def generate(model: SVDModel, cond, settings: SamplingSettings, sink, *, prefix: torch.Tensor | None = None,
             guides: Sequence[sampling.Guide] = (), loop_latent: torch.Tensor | None = None,
             callback: ProgressCallback | None = None):
    """:func:`prepare_run` then :meth:`GenerationRun.into` ``sink``."""
    return prepare_run(model, cond, settings, prefix, guides, loop_latent).into(sink, callback)


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
    ``writer``: the :class:`~longvid_core.run.video_io.VideoWriter` once opened (its ``kept_path`` and
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


__all__ = [
    "AUTO", "BUNDLED_MODEL", "CONTEXT_WINDOWS", "DEFAULTS_KEY", "DEFAULT_SAMPLER", "DEFAULT_SCHEDULER",
    "FULL_SEQUENCE", "MAX_FRAMES", "MAX_SEED", "MODES", "PROGRESSIVE", "REPLACEMENT_WITHOUT_NOISE",
    "REPLACEMENT_WITH_NOISE", "SAMPLER_NAMES", "SCHEDULER_NAMES", "SVD_DEFAULTS",
    "SVD_SIZE_MULTIPLE", "TRAINING_FREE", "TRAINING_FREE_OPTIONS", "GenerationRun", "ImageSink", "Keyframes",
    "LatentSink", "Mp4Sink", "SamplingSettings", "Schedule", "check_settings", "check_size", "condition_images",
    "decode_into", "generate", "guides_from_images", "is_refine", "latents_from_comfy", "loop_problem",
    "latents_to_comfy",
    "model_problem", "plan_sampling", "prepare_run", "recommended_settings", "resolve_auto", "settings_problem",
    "settings_notes", "sigmas_problem",
    "size_problem", "training_free", "with_schedule",
]
