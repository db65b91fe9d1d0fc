"""The settings of a generation run and everything that can be said of them before a model call:
the modes, what ``auto`` chooses, the training-free options, the limits and defaults, and the
checks that turn a wrong value into one :class:`~longvid_core.problems.Problem`.

Modes: ``progressive`` (PA-VDM rolling window, any length); ``full_sequence`` (one clip, all
frames at one noise level: ordinary SVD/ExSVD sampling); ``replacement_without_noise`` /
``replacement_with_noise`` (windows of ``window + chunk`` frames whose first ``chunk`` frames are
the previous window's last, held clean or re-noised: PA-VDM Sec. 2.2, at the progressive
sampler's frames per call so the comparison is fair); ``context_windows`` (ComfyUI core's).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..problems import Problem, range_problem, raise_problem
from ..sampling.guidance import DEFAULT_CFG, DEFAULT_MIN_CFG
from ..sampling.schedulers import DEFAULT_SCHEDULER, scheduler_levels, scheduler_problem
from ..sampling.schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW, window_problem
from ..shapes import nearest_multiples
from .modes import (AUTO, CONTEXT_WINDOWS, DEFAULT_SAMPLER, FULL_SEQUENCE, MAX_FRAMES, MAX_SEED, MODES, PROGRESSIVE,
                    REPLACEMENT_WITH_NOISE, REPLACEMENT_WITHOUT_NOISE, SAMPLER_NAMES, TRAINING_FREE,
                    TRAINING_FREE_OPTIONS)

if TYPE_CHECKING:
    from ..networks.model import SVDModel

SVD_SIZE_MULTIPLE = 64  # SVD: 8x VAE downscale, then the UNet halves the latent 3 times

BUNDLED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "longvid_small.safetensors"
DEFAULTS_KEY = "longvid.defaults"  # a model file's recommended settings (JSON in its metadata)
# Settings for real SVD-XT weights (ComfyUI's SVD template and ExVideo's example); decode_window /
# decode_overlap None: the decoder's defaults.
SVD_DEFAULTS = dict(width=1024, height=576, frames=240, window=DEFAULT_WINDOW, chunk=DEFAULT_CHUNK,
                    steps=DEFAULT_STEPS, cfg=DEFAULT_CFG, min_cfg=DEFAULT_MIN_CFG, fps=6,
                    motion_bucket_id=127, noise_aug_strength=0.02, output_fps=10, decode_window=None,
                    decode_overlap=None, context_sigma=None)


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: ``frames`` new frames (after any prefix) in ``mode``. ``context_sigma``
    (progressive only; None or 0: clean) is for models trained with context noise. ``partitions``
    and ``lookahead``: progressive rows split for one-level weights
    (:func:`~longvid_core.sampling.progressive.iter_progressive`).
    ``context_overlap``: frames shared by context windows of ``window + chunk`` frames (None: a
    quarter of a window, as ComfyUI's 16/4). ``cache_interval``: calls that may reuse the deep
    features of the last full call on the same frames (:mod:`longvid_core.sampling.step_cache`; 0: off)."""

    frames: int
    mode: str = AUTO
    window: int = DEFAULT_WINDOW
    chunk: int = DEFAULT_CHUNK
    steps: int = DEFAULT_STEPS
    cfg: float = DEFAULT_CFG
    min_cfg: float = DEFAULT_MIN_CFG
    seed: int = 0
    context_sigma: float | None = None
    partitions: int = 1
    lookahead: bool = False
    context_overlap: int | None = None
    cache_interval: int = 0
    scheduler: str = DEFAULT_SCHEDULER
    sampler_name: str = DEFAULT_SAMPLER
    sigmas: tuple[float, ...] | None = None  # a custom schedule (core's SIGMAS): replaces steps and scheduler
    # core's own sampler function (sampling.schedule_samplers.ScheduleSampler) in place of sampler_name
    schedule_sampler: object | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.sigmas is not None:  # the custom schedule's steps, whatever steps said
            object.__setattr__(self, "sigmas", tuple(float(v) for v in self.sigmas))
            object.__setattr__(self, "steps", len(self.sigmas) - 1)

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
        named = [f"{self.sampler_name} sampler"] if self.sampler_name != DEFAULT_SAMPLER else []
        if self.schedule_sampler is not None:
            named = [f"core's {self.schedule_sampler.name} sampler"]
        if self.sigmas is not None:
            named.append("custom sigmas")
        elif self.scheduler != DEFAULT_SCHEDULER:
            named.append(f"{self.scheduler} schedule")
        return self._describe_sampler() + "".join(f", {n}" for n in named) + cache

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
    scheduler: str = SamplingSettings.scheduler
    sampler_name: str = SamplingSettings.sampler_name

    def problem(self) -> Problem | None:
        """What is wrong with this schedule alone (:func:`settings_problem`), or None."""
        return settings_problem(self.mode, None, self.window, self.chunk, self.steps, None, None, self.context_sigma,
                                self.partitions, self.lookahead, self.context_overlap, self.cache_interval,
                                scheduler=self.scheduler, sampler_name=self.sampler_name)

    def describe(self) -> str:
        return SamplingSettings(1, **vars(self)).describe()


def with_schedule(settings: SamplingSettings, schedule: Schedule | None) -> SamplingSettings:
    """``settings`` with every field of ``schedule`` replacing its own (None: unchanged)."""
    return settings if schedule is None else replace(settings, **vars(schedule))


def resolve_auto(model: SVDModel, settings: SamplingSettings, refine: bool = False) -> tuple[SamplingSettings, str]:
    """``auto`` made concrete for this model, and why: as trained for weights that LongVid's trainer
    fine-tuned progressively; :data:`TRAINING_FREE` for all others, and for a ``refine`` (every frame
    starts from a guide below strength 1) on any weights. Other modes pass unchanged."""
    if settings.mode != AUTO:
        return settings, settings.describe()
    trained = getattr(model, "trained_for", None)
    settings, recommended = _as_recommended(settings, trained)
    if refine and trained is not None and trained.progressive:
        # bench_guides.py, 8 held-out scenes, refine 0.7 on the progressive small model: replacement
        # with noise 27.8 dB / SSIM 0.93 / flicker 10.1 at 6.2 evals per frame against progressive's
        # 26.4 / 0.92 / 8.3 at 19.8: held steps cost no call only where a call holds one level
        as_trained = replace(settings, window=trained.window, chunk=trained.chunk, steps=trained.steps)
        chosen = training_free(as_trained, TRAINING_FREE)
        return chosen, (f"auto -> {chosen.describe()} (a refine: every frame starts from its guide, and one "
                        f"level per call skips the held steps){recommended}")
    if trained is not None and trained.progressive:
        chosen = replace(settings, mode=PROGRESSIVE, window=trained.window, chunk=trained.chunk, steps=trained.steps,
                         partitions=1, lookahead=False)
        return chosen, f"auto -> {chosen.describe()} (the model was fine-tuned progressively){recommended}"
    # a grown layout comes from the one given: refuse a bad one as given
    if TRAINING_FREE_OPTIONS[TRAINING_FREE]["mode"] == PROGRESSIVE:
        raise_problem(settings_problem(PROGRESSIVE, window=settings.window, chunk=settings.chunk, steps=settings.steps))
    chosen = training_free(settings, TRAINING_FREE)
    why = "trained with one noise level per clip" if trained is not None else "no progressive fine-tuning recorded"
    return chosen, f"auto -> {chosen.describe()} ({why}){recommended}"


def _as_recommended(settings: SamplingSettings, trained) -> tuple[SamplingSettings, str]:
    """In ``auto``: ``settings`` with the sampler and scheduler the weights record (trained_for)
    where the settings keep LongVid's defaults, and words saying so."""
    changes = {}
    if trained is not None and trained.sampler_name and settings.sampler_name == DEFAULT_SAMPLER:
        changes["sampler_name"] = trained.sampler_name
    if trained is not None and trained.scheduler and settings.scheduler == DEFAULT_SCHEDULER and settings.sigmas is None:
        changes["scheduler"] = trained.scheduler
    if not changes:
        return settings, ""
    return replace(settings, **changes), f"; {' and '.join(changes.values())} as the weights recommend"


def settings_notes(model: SVDModel, settings: SamplingSettings) -> list[str]:
    """Warnings about settings that run but likely disappoint (nothing is refused here)."""
    trained = getattr(model, "trained_for", None)
    if settings.sampler_name == "lcm" and max(settings.cfg, settings.min_cfg) > 1 and not (trained and trained.distilled):
        return [f"sampler lcm with cfg {max(settings.cfg, settings.min_cfg):g}: LCM is for consistency-distilled "
                "weights (AnimateLCM-SVD-xt) at cfg 1, and these weights record no distillation; expect washed-out "
                "frames (use cfg 1, or another sampler)"]
    return []


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


def sigmas_problem(sigmas) -> Problem | None:
    """A custom schedule must be a full one: at least two values, finite, strictly decreasing, every
    one above 0 but the last, which is 0 (the frames end clean)."""
    values = [float(v) for v in sigmas]
    shown = "[" + ", ".join(f"{v:.4g}" for v in values[:6]) + (", ..." if len(values) > 6 else "") + "]"
    expected = "at least 2 values, strictly decreasing, ending in 0 (a full schedule)"
    if len(values) < 2:
        return Problem("sigmas", expected, f"{len(values)} value(s) {shown}")
    if not all(v == v and abs(v) != float("inf") for v in values):
        return Problem("sigmas", expected, f"NaN/Inf in {shown}")
    if any(a <= b for a, b in zip(values, values[1:])):
        return Problem("sigmas", expected, f"{shown}, not decreasing")
    if values[-1] != 0.0:
        return Problem("sigmas", expected, f"{shown} ending in {values[-1]:.4g}",
                       "a schedule's high part (SplitSigmas) leaves noise in the frames: give the whole schedule")
    return None


def settings_problem(mode=None, frames=None, window=None, chunk=None, steps=None, cfg=None, min_cfg=None,
                     context_sigma=None, partitions=None, lookahead=None, context_overlap=None,
                     cache_interval=None, seed=None, scheduler=None, sampler_name=None,
                     sigmas=None) -> Problem | None:
    """What is wrong with these settings; a value not known yet (None, e.g. a linked node input)
    is skipped. ``auto`` is checked once it is resolved for the model (:func:`prepare_run`)."""
    if mode is not None and mode not in MODES:
        return Problem("mode", f"one of {', '.join(MODES)}", repr(mode))
    if scheduler is not None and scheduler_problem(scheduler):
        return scheduler_problem(scheduler)
    if sampler_name is not None and sampler_name not in SAMPLER_NAMES:
        return Problem("sampler_name", f"one of {', '.join(SAMPLER_NAMES)}", repr(sampler_name))
    if sigmas is not None:
        problem = sigmas_problem(sigmas)
        if problem:
            return problem
        steps, scheduler = len(sigmas) - 1, None
    for name, value, smallest, largest in (
            ("frames", frames, 1, MAX_FRAMES), ("window", window, 1, None), ("chunk", chunk, 1, None),
            ("steps", steps, 1, None), ("cfg", cfg, 0, None), ("min_cfg", min_cfg, 0, None),
            ("context_sigma", context_sigma, 0, None), ("partitions", partitions, 1, None),
            ("context_overlap", context_overlap, 0, None), ("cache_interval", cache_interval, 0, None),
            ("seed", seed, 0, MAX_SEED)):
        problem = range_problem(name, value, smallest, largest)
        if problem:
            return problem
    if scheduler is not None and isinstance(steps, int) and steps >= 1:
        levels = scheduler_levels(scheduler, steps)
        if levels != steps:  # beta drops repeated table entries at many steps
            return Problem("steps", f"a count the {scheduler} scheduler gives as many distinct levels for",
                           f"{steps} steps give {levels} levels", "use fewer steps or another scheduler")
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


def check_settings(settings: SamplingSettings) -> None:
    """Raise ValueError saying what to change unless the settings alone are possible."""
    s = settings
    raise_problem(settings_problem(s.mode, s.frames, s.window, s.chunk, s.steps, s.cfg, s.min_cfg, s.context_sigma,
                            s.partitions, s.lookahead, s.context_overlap, s.cache_interval, s.seed, s.scheduler,
                            s.sampler_name, s.sigmas))
    if s.schedule_sampler is not None and s.mode == PROGRESSIVE:
        raise_problem(Problem("sampler", f"a sampler LongVid runs per frame in progressive mode: "
                              f"{', '.join(SAMPLER_NAMES)}", f"core's {s.schedule_sampler.name} (it runs one noise "
                              "level per call)", "pick one of those, or a full_sequence, replacement or "
                              "context_windows mode"))

# ---------------------------------------------------------------------------------------------
# A model file's recommended settings


def recommended_settings(path) -> dict:
    """Settings stored in a LongVid model file's metadata (:data:`DEFAULTS_KEY`), else SVD-XT's."""
    from ..weights.checkpoint_io import open_tensors

    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        meta = getattr(open_tensors(path), "metadata", {}) or {}
        if DEFAULTS_KEY in meta:
            return {**SVD_DEFAULTS, **json.loads(meta[DEFAULTS_KEY])}
    return dict(SVD_DEFAULTS)


__all__ = [
    "AUTO",
    "BUNDLED_MODEL",
    "CONTEXT_WINDOWS",
    "DEFAULTS_KEY",
    "FULL_SEQUENCE",
    "MAX_FRAMES",
    "MAX_SEED",
    "MODES",
    "PROGRESSIVE",
    "REPLACEMENT_WITHOUT_NOISE",
    "REPLACEMENT_WITH_NOISE",
    "SVD_DEFAULTS",
    "SVD_SIZE_MULTIPLE",
    "TRAINING_FREE",
    "TRAINING_FREE_OPTIONS",
    "SamplingSettings",
    "Schedule",
    "check_settings",
    "check_size",
    "model_problem",
    "recommended_settings",
    "resolve_auto",
    "settings_notes",
    "settings_problem",
    "sigmas_problem",
    "size_problem",
    "training_free",
    "with_schedule",
]
