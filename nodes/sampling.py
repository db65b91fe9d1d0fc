"""LongVidSample (-> LATENT) and LongVidSampleToVideo (-> mp4, streamed while sampling)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid_core import generate, samplers
from longvid_core.generate import FULL_SEQUENCE, PROGRESSIVE
from longvid_core.decoding import approximate_rgb
from longvid_core.schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW
from longvid_core.vae import VAE_SCALE

from . import runtime
from .validation import check_widgets, check_window, first_problem, raise_if

MODES = list(generate.MODES)
MAX_SEED = 0xFFFFFFFFFFFFFFFF


def sampling_inputs() -> dict:
    """The sampling widgets shared by LongVidSample and LongVidSampleToVideo (same names, same order)."""
    return {
        "model": ("LONGVID_MODEL",),
        "cond": ("LONGVID_COND",),
        "frames": ("INT", {"default": 96, "min": 1, "max": 1_000_000,
                           "tooltip": "New latent frames to generate (one latent = one video frame). A prefix's "
                                      "frames come in front of these."}),
        "mode": (MODES, {"default": PROGRESSIVE, "tooltip": (
            "progressive: PA-VDM rolling window, any length. full_sequence: one clip, all frames at once (<= 25 "
            "frames for SVD, <= the table for ExVideo). replacement_*: window after window, each conditioned on "
            "the last chunk frames of the one before, held clean or re-noised (the paper's baselines).")}),
        "window": ("INT", {"default": DEFAULT_WINDOW, "min": 1, "max": 1024,
                           "tooltip": "Noisy frames in the rolling window (a multiple of chunk). The model sees "
                                      "window + chunk frames per call."}),
        "chunk": ("INT", {"default": DEFAULT_CHUNK, "min": 1, "max": 1024,
                          "tooltip": "Frames that enter and leave the window together (replacement modes: the "
                                     "condition frames carried from window to window)."}),
        "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": 1000,
                          "tooltip": "Denoising steps every frame goes through (progressive: a multiple of "
                                     "window / chunk)."}),
        "cfg": ("FLOAT", {"default": samplers.DEFAULT_CFG, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                          "tooltip": "Guidance at the back (noisiest end) of the window."}),
        "min_cfg": ("FLOAT", {"default": samplers.DEFAULT_MIN_CFG, "min": 0.0, "max": 30.0, "step": 0.1,
                              "round": 0.01, "tooltip": "Guidance at the front of the window (SVD's linear ramp)."}),
        "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True,
                         "tooltip": "Start noise of frame k depends only on (seed, k)."}),
    }


CONTEXT_SIGMA_INPUT = ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01, "round": 0.001, "tooltip": (
    "progressive: give the finished chunk in front of the window to the model noised at this sigma. Only for "
    "models fine-tuned with training/train.py --progressive-context-sigma; 0 gives it clean, as PA-VDM does.")})

PREFIX_INPUT = ("LATENT", {"tooltip": "Frames of a video to extend (LongVid Encode Frames); the output starts "
                                      "with them."})


def validate_sampling(node_cls, frames=None, mode=None, window=None, chunk=None, steps=None, cfg=None,
                      min_cfg=None, seed=None, context_sigma=None) -> str | bool:
    return first_problem(
        check_widgets(node_cls, frames=frames, mode=mode, window=window, chunk=chunk, steps=steps, cfg=cfg,
                      min_cfg=min_cfg, seed=seed, context_sigma=context_sigma),
        check_window(window, chunk, steps) if mode == PROGRESSIVE else None,
        (f"context_sigma is {context_sigma}, but context noise is for the progressive mode only; found mode "
         f"{mode!r}: set it to 0 or use progressive") if context_sigma and mode not in (None, PROGRESSIVE) else None,
    )


@dataclass
class SamplingRun:
    """One validated sampling run: the frame generator, its cost, the prefix it extends."""

    plan: samplers.SamplingPlan
    total_frames: int  # prefix + new
    prefix: torch.Tensor | None  # scaled latents [1, P, 4, h, w] on the compute device
    new_frames: object  # generator of (frame_index, latent [1, 4, h, w])


def _check_model_limits(model, mode, frames, window, chunk, prefix_frames) -> None:
    """The checks that need the model (VALIDATE_INPUTS cannot see linked inputs); before any work."""
    limit = model.max_frames
    if mode == FULL_SEQUENCE:
        if prefix_frames:
            raise ValueError("full_sequence mode cannot extend a video (it has no prefix input); use the progressive "
                             "or a replacement mode, or disconnect the prefix")
        if frames > model.trained_frames:
            what = (f"this ExVideo extension's frame-position table holds {limit} frames" if limit
                    else f"plain SVD was trained on clips of {model.trained_frames} frames")
            raise ValueError(f"full_sequence mode denoises all {frames} frames as one clip, but {what}: use frames "
                             f"<= {model.trained_frames}, or the progressive mode for longer videos")
    elif limit is not None and window + chunk > limit:
        raise ValueError(
            f"the {mode} sampler shows the model window + chunk = {window} + {chunk} = {window + chunk} frames per "
            f"call, but this ExVideo extension's frame-position table holds {limit} frames: use window <= "
            f"{limit - chunk} (a multiple of chunk)"
        )


def _prefix_latents(prefix, frame_hw, device) -> torch.Tensor | None:
    if prefix is None:
        return None
    samples = prefix["samples"]
    if samples.dim() != 4 or samples.shape[1] != 4:
        raise ValueError(f"prefix: expected LATENT samples [frames, 4, h, w]; found {tuple(samples.shape)}")
    if tuple(samples.shape[-2:]) != tuple(frame_hw):
        raise ValueError(
            f"prefix latents are {samples.shape[-2]}x{samples.shape[-1]} but the conditioning is "
            f"{frame_hw[0]}x{frame_hw[1]} (latent pixels): encode the prefix frames at the same width and height"
        )
    if samples.shape[0] == 0:
        return None
    return (samples.to(device=device, dtype=torch.float32) * VAE_SCALE).unsqueeze(0)  # ComfyUI LATENT is unscaled


def start_sampling(model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, prefix=None,
                   node_cls=None, context_sigma=0.0) -> SamplingRun:
    """Validate everything, then set up (not yet run) the sampler with progress and cancel wired in."""
    raise_if(validate_sampling(node_cls or LongVidSample, frames, mode, window, chunk, steps, cfg, min_cfg, seed,
                               context_sigma))
    device = model.device
    keyframes = [(start, c.to(device)) for start, c in cond]
    frame_hw = tuple(keyframes[0][1].concat_latent.shape[-2:])
    prefix_latents = _prefix_latents(prefix, frame_hw, device)
    prefix_frames = 0 if prefix_latents is None else prefix_latents.shape[1]
    total = prefix_frames + frames
    _check_model_limits(model, mode, frames, window, chunk, prefix_frames)
    late = [start for start, _ in keyframes if start >= total]
    if late:
        raise ValueError(
            f"keyframe start(s) {late} lie past the end of the video (frames 0..{total - 1}: {prefix_frames} prefix + "
            f"{frames} new): lower them in keyframe_starts or generate more frames"
        )

    svd = model.prepare("unet")
    plan = generate.plan_sampling(mode, total, window=window, chunk=chunk, steps=steps, prefix_frames=prefix_frames)
    bar = runtime.progress_bar(plan.denoiser_calls)

    def on_call(progress: samplers.SamplingProgress):
        preview = None
        if progress.newest_latent is not None:  # a frame just finished: show it (cheap RGB map, no VAE)
            preview = runtime.preview_image(approximate_rgb(progress.newest_latent))
        bar.update_absolute(progress.calls_done, progress.calls_total, preview)
        runtime.throw_if_interrupted()  # cancel takes effect after the call in flight

    runtime.throw_if_interrupted()
    generator = generate.iter_sampling(
        mode, svd.denoise, keyframes, total, (1, 4, *frame_hw), window=window, chunk=chunk, steps=steps, cfg=cfg,
        min_cfg=min_cfg, seed=seed, prefix=prefix_latents, context_sigma=context_sigma or None, callback=on_call,
        device=device)
    return SamplingRun(plan, total, prefix_latents, generator)


class LongVidSample:
    DESCRIPTION = (
        "Samples a long video latent with the PA-VDM progressive rolling sampler (or full-sequence / replacement). "
        "Output: LATENT [frames, 4, h, w] in ComfyUI's layout, starting with the prefix's frames when one is given. "
        "The progress bar counts every denoiser call."
    )
    CATEGORY = "LongVid"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Video latents, prefix frames first.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        # context_sigma last: a workflow saved before it existed keeps its widget values in place
        return {"required": sampling_inputs(),
                "optional": {"prefix": PREFIX_INPUT, "context_sigma": CONTEXT_SIGMA_INPUT}}

    @classmethod
    def VALIDATE_INPUTS(cls, frames=None, mode=None, window=None, chunk=None, steps=None, cfg=None, min_cfg=None,
                        seed=None, context_sigma=None):
        return validate_sampling(cls, frames, mode, window, chunk, steps, cfg, min_cfg, seed, context_sigma)

    def sample(self, model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, prefix=None,
               context_sigma=0.0):
        with torch.no_grad():
            run = start_sampling(model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, prefix,
                                 node_cls=type(self), context_sigma=context_sigma)
            latents = samplers.collect_frames(run.new_frames, run.total_frames, run.prefix)
        return ({"samples": (latents[0] / VAE_SCALE).cpu()},)
