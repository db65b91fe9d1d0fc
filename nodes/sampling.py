"""LongVidSample (-> LATENT): the sampling widgets, checked and run through ``longvid_core.run.pipeline``."""

from __future__ import annotations

import logging
from dataclasses import replace

from longvid_core import SVDCond, pipeline, sampling
from longvid_core.problems import Problem
from longvid_core.progress import SAMPLING
from longvid_core.run.pipeline import AUTO
from longvid_core.sampling.schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW

from . import runtime
from .guides import GUIDES_INPUT, encoded_guides
from .spec import Boolean, Combo, Float, Int, NodeSpec, Output, Socket
from .validation import NOT_CONNECTED, check_widgets, first_problem, raise_if

MODES = list(pipeline.MODES)
MAX_SEED = 0xFFFFFFFFFFFFFFFF


REPLACED = " Replaced by the schedule input when that is connected."
MODE_INPUT = Combo("mode", MODES, AUTO, tooltip=(
    "auto: progressive as trained for weights fine-tuned progressively by LongVid's trainer, otherwise the "
    "best training-free setting (SVD-XT, ExVideo); the settings output says which. progressive: PA-VDM "
    "rolling window, any length. context_windows: ComfyUI core's overlapping windows at one noise level. "
    "full_sequence: one clip, all frames at once (<= 25 frames for SVD, <= the table for ExVideo). "
    "replacement_*: window after window, each conditioned on the last chunk frames of the one before."))
WINDOW_INPUT = Int("window", DEFAULT_WINDOW, 1, 1024, tooltip=(
    "Noisy frames in the rolling window (a multiple of chunk). The model sees window + chunk frames per call."))
CHUNK_INPUT = Int("chunk", DEFAULT_CHUNK, 1, 1024, tooltip=(
    "Frames that enter and leave the window together (replacement modes: the condition frames carried "
    "from window to window)."))
STEPS_INPUT = Int("steps", DEFAULT_STEPS, 1, 1000, tooltip=(
    "Denoising steps every frame goes through (progressive: a multiple of window / chunk)."))


def replaced_by_schedule(widget):
    return replace(widget, tooltip=widget.tooltip + REPLACED)


def sampling_inputs() -> tuple:
    """The sampling inputs shared by LongVidSample and LongVidSampleToVideo (same names, same order)."""
    return (
        Socket("model", "LONGVID_MODEL", "The model from LongVid Load SVD."),
        Socket("cond", "LONGVID_COND", "The conditioning from LongVid Condition (image or keyframes)."),
        Int("frames", 96, 1, 1_000_000, tooltip=(
            "New latent frames to generate (one latent = one video frame). A prefix's frames come in front of "
            "these.")),
        *(replaced_by_schedule(w) for w in (MODE_INPUT, WINDOW_INPUT, CHUNK_INPUT, STEPS_INPUT)),
        Float("cfg", sampling.DEFAULT_CFG, 0.0, 30.0, step=0.1, round=0.01,
              tooltip="Guidance at the back (noisiest end) of the window."),
        Float("min_cfg", sampling.DEFAULT_MIN_CFG, 0.0, 30.0, step=0.1, round=0.01,
              tooltip="Guidance at the front of the window (SVD's linear ramp)."),
        Int("seed", 0, 0, MAX_SEED, control_after_generate=True,
            tooltip="Start noise of frame k depends only on (seed, k)."),
    )


CONTEXT_SIGMA_INPUT = Float("context_sigma", 0.0, 0.0, 10.0, step=0.01, round=0.001, optional=True, advanced=True,
                            tooltip=(
    "progressive: give the finished chunk in front of the window to the model noised at this sigma. Only for "
    "models fine-tuned with training/train.py --progressive-context-sigma; 0 gives it clean, as PA-VDM does."))
PARTITIONS_INPUT = Int("partitions", 1, 1, 64, optional=True, advanced=True, tooltip=(
    "progressive: split each call's window into this many calls, each spanning fewer noise levels "
    "(FIFO-Diffusion's latent partitioning, for weights trained with one noise level per clip)."))
LOOKAHEAD_INPUT = Boolean("lookahead", False, optional=True, advanced=True, tooltip=(
    "progressive: each partition also sees the cleaner partition ahead of it (FIFO-Diffusion's lookahead)."))
CONTEXT_OVERLAP_INPUT = Int("context_overlap", -1, -1, 1024, optional=True, advanced=True, tooltip=(
    "context_windows: frames shared by neighbouring windows of window + chunk frames; -1: a quarter of a window."))
# new inputs go last, so a workflow saved before them keeps its widget values in place
TRAINING_FREE_INPUTS = (CONTEXT_SIGMA_INPUT, PARTITIONS_INPUT, LOOKAHEAD_INPUT, CONTEXT_OVERLAP_INPUT)
SAMPLING_OPTIONAL = tuple(replaced_by_schedule(w) for w in TRAINING_FREE_INPUTS)
CACHE_INTERVAL_INPUT = Int("cache_interval", 0, 0, 16, optional=True, advanced=True, tooltip=(
    "Reuse the UNet's deep features on up to this many calls after each full call on the same frames "
    "(DeepCache): those calls run only the outer blocks. 0: off. Faster, slightly different video."))
SAMPLER_INPUT = Combo("sampler_name", list(pipeline.SAMPLER_NAMES), pipeline.DEFAULT_SAMPLER, optional=True, tooltip=(
    "The step rule, by ComfyUI's names (core's formulas). In progressive mode each frame keeps its own history "
    "(dpmpp_2m) and noise (euler_ancestral, lcm) as the window moves. heun and dpm_2 make two calls a step."))
SCHEDULER_INPUT = Combo("scheduler", list(pipeline.SCHEDULER_NAMES), pipeline.DEFAULT_SCHEDULER, optional=True,
                        tooltip=(
    "The sigma schedule, by ComfyUI's names; align_your_steps is AYS's SVD list resampled to the steps. In "
    "progressive mode its levels are the table's."))
SIGMAS_INPUT = Socket("sigmas", "SIGMAS", optional=True, tooltip=(
    "A custom schedule from core's scheduler nodes (BasicScheduler, KarrasScheduler, AlignYourStepsScheduler with "
    "model_type SVD, ...): replaces steps and scheduler, in every mode. It must be a whole schedule ending in 0; "
    "in progressive mode its step count must suit the window (a multiple of window / chunk)."))
CORE_SAMPLER_INPUT = Socket("sampler", "SAMPLER", optional=True, tooltip=(
    "A sampler from core's KSamplerSelect: replaces sampler_name. LongVid runs it with its own per-frame version "
    "of core's formulas (tested to agree in one-level modes), so it works in every mode; a sampler it has no "
    "version of, or one with options, is refused before sampling with the list of those it runs."))
NAMED_INPUTS = (*(replaced_by_schedule(w) for w in (SAMPLER_INPUT, SCHEDULER_INPUT)), SIGMAS_INPUT, CORE_SAMPLER_INPUT)
SCHEDULE_INPUT = Socket("schedule", "LONGVID_SCHEDULE", optional=True, tooltip=(
    "Sampler settings from LongVid Settings (share one with LongVid Schedule View, so it draws what runs). When "
    "connected it replaces this node's mode, window, chunk, steps, context_sigma, partitions, lookahead, "
    "context_overlap, sampler_name and scheduler widgets; frames, cfg, min_cfg and seed stay here."))

PREFIX_INPUT = Socket("prefix", "LATENT", optional=True, tooltip=(
    "Frames of a video to extend (LongVid Encode Frames); the output starts with them."))
SETTINGS_OUTPUT = Output("settings", "STRING", "The sampling settings used (what auto chose, and why).")


SCHEDULE_WIDGETS = ("mode", "window", "chunk", "steps", "context_sigma", "partitions", "lookahead", "context_overlap",
                    "sampler_name", "scheduler")


def validate_sampling(node_cls, frames=None, mode=None, window=None, chunk=None, steps=None, cfg=None,
                      min_cfg=None, seed=None, context_sigma=None, partitions=None, lookahead=None,
                      context_overlap=None, schedule=NOT_CONNECTED, sampler_name=None, scheduler=None) -> str | bool:
    """A connected schedule (at validation a link arrives as None) makes the widgets it replaces unused:
    they are not checked."""
    if schedule is not NOT_CONNECTED:
        mode = window = chunk = steps = context_sigma = partitions = lookahead = context_overlap = None
        sampler_name = scheduler = None
    return first_problem(
        check_widgets(node_cls, frames=frames, mode=mode, window=window, chunk=chunk, steps=steps, cfg=cfg,
                      min_cfg=min_cfg, seed=seed, context_sigma=context_sigma, partitions=partitions,
                      context_overlap=context_overlap, sampler_name=sampler_name, scheduler=scheduler),
        pipeline.settings_problem(mode, frames, window, chunk, steps, cfg, min_cfg, context_sigma, partitions,
                                  lookahead, _overlap(context_overlap), scheduler=scheduler,
                                  sampler_name=sampler_name),
    )


def _overlap(context_overlap):
    return None if context_overlap is None or context_overlap < 0 else context_overlap


def widget_schedule(mode, window, chunk, steps, context_sigma=0.0, partitions=1, lookahead=False,
                    context_overlap=-1, cache_interval=0, sampler_name=pipeline.DEFAULT_SAMPLER,
                    scheduler=pipeline.DEFAULT_SCHEDULER) -> pipeline.Schedule:
    """The schedule the widgets describe (0 context_sigma: clean context; -1 context_overlap: the default)."""
    return pipeline.Schedule(mode, window, chunk, steps, context_sigma or None, partitions, bool(lookahead),
                             _overlap(context_overlap), int(cache_interval or 0), scheduler, sampler_name)


# core's sampler functions whose name is not "sample_" + the sampler's name (comfy/extra_samplers/uni_pc.py)
CORE_FUNCTION_NAMES = {"unipc": "uni_pc", "unipc_bh2": "uni_pc_bh2"}


def with_core_sampler(settings, sampler):
    """``settings`` running core's ``sampler`` (a KSAMPLER, whose ``sampler_function`` is k-diffusion's
    ``sample_<name>``): LongVid's per-frame rule of that name when it has one and no options are
    set (every mode), else core's own function over each window's schedule (one-level modes only;
    progressive is refused by the settings check, with the names that work there)."""
    from longvid_core.sampling.schedule_samplers import ScheduleSampler

    function = getattr(sampler, "sampler_function", None)
    if not callable(function):
        raise ValueError(Problem("sampler", "core's SAMPLER (from KSamplerSelect or a sampler node)",
                                 type(sampler).__name__))
    name = getattr(function, "__name__", "custom").removeprefix("sample_")
    name = CORE_FUNCTION_NAMES.get(name, name)
    options = dict(getattr(sampler, "extra_options", None) or {})
    if name in pipeline.SAMPLER_NAMES and not options:
        return replace(settings, sampler_name=name)
    return replace(settings, schedule_sampler=ScheduleSampler(name, function, options))


def custom_sigmas(sigmas) -> tuple[float, ...]:
    if not hasattr(sigmas, "tolist") or getattr(sigmas, "ndim", 1) != 1:
        raise ValueError(f"sigmas: expected core's SIGMAS (a 1-D tensor); found {type(sigmas).__name__}")
    return tuple(float(v) for v in sigmas.tolist())


def checked_schedule(schedule) -> pipeline.Schedule:
    if not isinstance(schedule, pipeline.Schedule):
        raise ValueError(f"schedule: expected the output of LongVid Settings; found {type(schedule).__name__}")
    return schedule


def prepare_run(model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, prefix=None,
                node_cls=None, context_sigma=0.0, partitions=1, lookahead=False,
                context_overlap=-1, schedule=None, guides=None, sampler_name=pipeline.DEFAULT_SAMPLER,
                scheduler=pipeline.DEFAULT_SCHEDULER, sigmas=None, sampler=None) -> pipeline.GenerationRun:
    """Everything checked before any work: the widgets (a linked input reached validate_inputs as
    None), then the pipeline's checks of the settings and the model (where ``auto`` is resolved).
    A connected ``schedule`` replaces the widgets it holds, which are then neither checked nor used.
    ``guides`` (LongVid Guides' pictures) are encoded with the model's VAE and checked with the rest."""
    if schedule is None:
        schedule = widget_schedule(mode, window, chunk, steps, context_sigma, partitions, lookahead, context_overlap,
                                   sampler_name=sampler_name, scheduler=scheduler)
        raise_if(check_widgets(node_cls or LongVidSample, mode=mode, window=window, chunk=chunk, steps=steps,
                               context_sigma=context_sigma, partitions=partitions, context_overlap=context_overlap,
                               sampler_name=sampler_name, scheduler=scheduler))
    raise_if(check_widgets(node_cls or LongVidSample, frames=frames, cfg=cfg, min_cfg=min_cfg, seed=seed))
    settings = pipeline.with_schedule(pipeline.SamplingSettings(frames, cfg=cfg, min_cfg=min_cfg, seed=seed),
                                      checked_schedule(schedule))
    if sampler is not None:  # core's SAMPLER: LongVid's rule of that name, or core's function where it can run
        settings = with_core_sampler(settings, sampler)
    if sigmas is not None:  # core's SIGMAS: a 1-D tensor
        raise_if(pipeline.sigmas_problem(custom_sigmas(sigmas)))
        settings = replace(settings, sigmas=custom_sigmas(sigmas))
    prefix_latents = None if prefix is None else pipeline.latents_from_comfy(prefix, "prefix")
    encoded, loop_latent = [], None
    if guides:
        first = cond if isinstance(cond, SVDCond) else cond[0][1]
        frame_shape = (first.batch_size, model.svd.vae.config.latent_channels, *first.concat_latent.shape[-2:])
        parts = ("vae", "image_encoder") if any(g.method in ("time_reversal", "auto") for g in guides) else ("vae",)
        encoded, loop_latent, notes = encoded_guides(model.prepare(*parts), guides, frame_shape, first)
        for note in notes:
            logging.warning("LongVid: %s", note)
    run = pipeline.prepare_run(model.svd, cond, settings, prefix_latents, guides=encoded, loop_latent=loop_latent)
    for note in run.notes:
        logging.warning("LongVid: %s", note)
    runtime.throw_if_interrupted()
    return run


class LongVidSample:
    SPEC = NodeSpec(
        node_id="LongVidSample",
        display_name="LongVid Sample",
        description=(
            "Samples a long video latent with the PA-VDM progressive rolling sampler (or full-sequence / "
            "replacement). Output: LATENT [frames, 4, h, w] in ComfyUI's layout, starting with the prefix's frames "
            "when one is given. The progress bar counts every denoiser call."),
        function="sample",
        report_under="window",
        inputs=(*sampling_inputs(), PREFIX_INPUT, *SAMPLING_OPTIONAL, SCHEDULE_INPUT, GUIDES_INPUT, *NAMED_INPUTS),
        outputs=(Output("latent", "LATENT", "Video latents, prefix frames first."), SETTINGS_OUTPUT),
    )

    @classmethod
    def validate_inputs(cls, frames=None, mode=None, window=None, chunk=None, steps=None, cfg=None, min_cfg=None,
                        seed=None, context_sigma=None, partitions=None, lookahead=None, context_overlap=None,
                        schedule=NOT_CONNECTED, sampler_name=None, scheduler=None):
        return validate_sampling(cls, frames, mode, window, chunk, steps, cfg, min_cfg, seed, context_sigma,
                                 partitions, lookahead, context_overlap, schedule, sampler_name, scheduler)

    def sample(self, model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, prefix=None,
               context_sigma=0.0, partitions=1, lookahead=False, context_overlap=-1, schedule=None, guides=None,
               sampler_name=pipeline.DEFAULT_SAMPLER, scheduler=pipeline.DEFAULT_SCHEDULER, sigmas=None,
               sampler=None):
        run = prepare_run(model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, prefix,
                          type(self), context_sigma, partitions, lookahead, context_overlap, schedule, guides,
                          sampler_name, scheduler, sigmas, sampler)
        model.prepare("unet")
        latents = run.into(pipeline.LatentSink(), runtime.progress_callback(SAMPLING, run.plan.denoiser_calls))
        return (pipeline.latents_to_comfy(latents), run.chosen)
