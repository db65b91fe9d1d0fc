"""Frames out: LongVidDecode (-> IMAGE and VIDEO), LongVidSaveVideo (LATENT -> mp4) and LongVidSampleToVideo
(sampling straight into an mp4, frames decoded as the sampler finishes them)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from longvid_core import pipeline
from longvid_core.networks.decoding import DEFAULT_DECODE_OVERLAP, DEFAULT_DECODE_WINDOW, decode_window_problem
from longvid_core.problems import Problem
from longvid_core.progress import DECODING, SAMPLING
from longvid_core.run import video_io
from longvid_core.run.video_io import DEFAULT_CRF

from . import runtime
from .guides import GUIDES_INPUT
from .sampling import (NAMED_INPUTS, PREFIX_INPUT, SAMPLING_OPTIONAL, SCHEDULE_INPUT, SETTINGS_OUTPUT, prepare_run, sampling_inputs,
                       validate_sampling)
from .spec import Float, Int, NodeSpec, Output, Socket, String
from .validation import NOT_CONNECTED, check_widgets, first_problem, raise_if


MODEL_INPUT = Socket("model", "LONGVID_MODEL", "The model from LongVid Load SVD (its VAE decodes).")
SAMPLES_INPUT = Socket("samples", "LATENT", "Video latents from LongVid Sample ([frames, 4, h, w]).")


def decode_inputs() -> tuple:
    return (
        Int("decode_window", DEFAULT_DECODE_WINDOW, 1, 256, advanced=True, tooltip=(
            "Latent frames the temporal VAE decodes together; bounds memory (lower it if decoding runs out of "
            "memory).")),
        Int("overlap", DEFAULT_DECODE_OVERLAP, 0, 128, advanced=True, tooltip=(
            "Frames shared by consecutive decode windows and cross-faded, so there is no hard cut (flicker) at "
            "window borders. At most half of decode_window; 0 = back-to-back chunks.")),
    )


def video_inputs() -> tuple:
    return (
        String("filename_prefix", "video/LongVid", tooltip=(
            "File name start inside ComfyUI's output folder (subfolders allowed); a number and .mp4 are added.")),
        Float("frame_rate", 8.0, 0.1, 240.0, step=0.1, tooltip="Playback frames per second of the mp4."),
        Int("crf", DEFAULT_CRF, 0, 51, advanced=True,
            tooltip="H.264 quality: lower = better and larger (0 lossless, 19 visually lossless)."),
        *decode_inputs(),
    )


OUTPUT_PATH_INPUT = String("output_path", "", optional=True, advanced=True, tooltip=(
    "Optional: write exactly this .mp4 file inside the output folder (e.g. 'videos/clip.mp4', replacing a file "
    "of that name) instead of a new numbered one. Absolute paths work only outside ComfyUI (scripts)."))
PATH_OUTPUT = Output("path", "STRING", "The mp4 file written.")


@dataclass(frozen=True)
class VideoFrames:
    """A VIDEO output's value outside ComfyUI: frames ``[n, H, W, 3]`` (0..1) and their frame rate.
    Inside ComfyUI nodes/comfy_v3.py hands it on as core's ``VideoFromComponents`` (no copy)."""

    images: torch.Tensor
    frame_rate: Fraction


def check_decode(decode_window, overlap) -> Problem | None:
    if decode_window is None or overlap is None:
        return None
    problem = decode_window_problem(decode_window, overlap)
    if problem is not None and problem.input == "decode_overlap":  # the node's widget is "overlap"
        return Problem.about("overlap", "overlap" + str(problem)[len("decode_overlap"):])
    return problem


def check_output_path(output_path) -> str | None:
    return None if output_path is None else runtime.output_path_problem(output_path)


def video_problem(node_cls, frame_rate=None, crf=None, decode_window=None, overlap=None, output_path=None):
    """The mp4 widgets' checks (LongVidSaveVideo, LongVidSampleToVideo)."""
    return first_problem(
        check_widgets(node_cls, frame_rate=frame_rate, crf=crf, decode_window=decode_window, overlap=overlap),
        check_decode(decode_window, overlap), check_output_path(output_path))


def _target(filename_prefix: str, output_path: str):
    """(file, ui entry or None) for a new video."""
    if output_path:
        path, subfolder, filename = runtime.explicit_output_file(output_path)
    else:
        path, subfolder, filename = runtime.next_output_file(filename_prefix, ".mp4")
    return path, None if filename is None else {"filename": filename, "subfolder": subfolder, "type": "output"}


def _result(path: Path, ui_entry, *more):
    # the same preview entry ComfyUI's own SaveVideo sends (a file in the output folder)
    ui = {"images": [ui_entry], "animated": (True,)} if ui_entry else {}
    return {"ui": ui, "result": (str(path), *more)}


class LongVidDecode:
    SPEC = NodeSpec(
        node_id="LongVidDecode",
        display_name="LongVid Decode (overlapping windows)",
        description=(
            "Decodes video latents with SVD's temporal VAE in overlapping windows, cross-faded (no seams, bounded "
            "memory) -> IMAGE frames [frames, H, W, 3]. For very long videos use LongVid Save Video, which never "
            "holds all frames."),
        function="decode",
        report_under="overlap",
        # added after the V1 release: an optional input and an output, both last
        inputs=(MODEL_INPUT, SAMPLES_INPUT, *decode_inputs(),
                Float("frame_rate", 8.0, 0.1, 240.0, step=0.1, optional=True,
                      tooltip="Frames per second the video output plays at (the IMAGE output has none).")),
        outputs=(Output("frames", "IMAGE", "The video frames, first to last."),
                 Output("video", "VIDEO", "The same frames as ComfyUI's VIDEO, with frame_rate: for core Save "
                                          "Video, Get Video Components and the video preview.")),
    )

    @classmethod
    def validate_inputs(cls, decode_window=None, overlap=None, frame_rate=None):
        return first_problem(check_widgets(cls, decode_window=decode_window, overlap=overlap, frame_rate=frame_rate),
                             check_decode(decode_window, overlap))

    def decode(self, model, samples, decode_window, overlap, frame_rate=8.0):
        raise_if(self.validate_inputs(decode_window, overlap, frame_rate))
        latents = pipeline.latents_from_comfy(samples)
        frames = pipeline.decode_into(model.prepare("vae"), latents, pipeline.ImageSink(decode_window, overlap),
                                      runtime.progress_callback(DECODING, latents.shape[1]))[0]
        return (frames, VideoFrames(frames, video_io.frame_rate(frame_rate)))


class LongVidSaveVideo:
    SPEC = NodeSpec(
        node_id="LongVidSaveVideo",
        display_name="LongVid Save Video (mp4, streamed)",
        description=(
            "Decodes video latents window by window (cross-faded overlap) and writes each finished frame straight "
            "into an mp4 (H.264, yuv420p), so a video of any length is saved without holding its frames in "
            "memory."),
        function="save",
        report_under="overlap",
        inputs=(MODEL_INPUT, SAMPLES_INPUT, *video_inputs(), OUTPUT_PATH_INPUT),
        outputs=(PATH_OUTPUT,),
        output_node=True,
    )

    @classmethod
    def validate_inputs(cls, frame_rate=None, crf=None, decode_window=None, overlap=None, output_path=None):
        return video_problem(cls, frame_rate, crf, decode_window, overlap, output_path)

    def save(self, model, samples, filename_prefix, frame_rate, crf, decode_window, overlap, output_path=""):
        raise_if(self.validate_inputs(frame_rate, crf, decode_window, overlap, output_path))
        latents = pipeline.latents_from_comfy(samples)
        path, ui_entry = _target(filename_prefix, output_path)
        pipeline.decode_into(model.prepare("vae"), latents, pipeline.Mp4Sink(path, frame_rate, crf, decode_window,
                                                                             overlap),
                             runtime.progress_callback(DECODING, latents.shape[1]))
        return _result(path, ui_entry)


class LongVidSampleToVideo:
    SPEC = NodeSpec(
        node_id="LongVidSampleToVideo",
        display_name="LongVid Sample to Video (streamed)",
        description=(
            "LongVid Sample and LongVid Save Video in one: every frame is decoded and written to the mp4 as soon as "
            "the sampler finishes it, so neither the latents nor the frames of a long video are ever held in memory "
            "(no out-of-memory at decode after hours of sampling). Cancelling keeps a playable mp4 of the frames so "
            "far."),
        function="sample_to_video",
        report_under="window",
        # optional inputs in the order they were added: a saved workflow keeps its widget values in place
        inputs=(*sampling_inputs(), *video_inputs(), PREFIX_INPUT, OUTPUT_PATH_INPUT, *SAMPLING_OPTIONAL,
                SCHEDULE_INPUT, GUIDES_INPUT, *NAMED_INPUTS),
        outputs=(PATH_OUTPUT, SETTINGS_OUTPUT),
        output_node=True,
    )

    @classmethod
    def validate_inputs(cls, frames=None, mode=None, window=None, chunk=None, steps=None, cfg=None, min_cfg=None,
                        seed=None, frame_rate=None, crf=None, decode_window=None, overlap=None, output_path=None,
                        context_sigma=None, partitions=None, lookahead=None, context_overlap=None,
                        schedule=NOT_CONNECTED, sampler_name=None, scheduler=None):
        return first_problem(
            validate_sampling(cls, frames, mode, window, chunk, steps, cfg, min_cfg, seed, context_sigma, partitions,
                              lookahead, context_overlap, schedule, sampler_name, scheduler),
            video_problem(cls, frame_rate, crf, decode_window, overlap, output_path))

    def sample_to_video(self, model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, filename_prefix,
                        frame_rate, crf, decode_window, overlap, prefix=None, output_path="", context_sigma=0.0,
                        partitions=1, lookahead=False, context_overlap=-1, schedule=None, guides=None,
                        sampler_name=pipeline.DEFAULT_SAMPLER, scheduler=pipeline.DEFAULT_SCHEDULER, sigmas=None,
                        sampler=None):
        # the sampling inputs are checked by prepare_run
        raise_if(video_problem(type(self), frame_rate, crf, decode_window, overlap, output_path))
        run = prepare_run(model, cond, frames, mode, window, chunk, steps, cfg, min_cfg, seed, prefix,
                          type(self), context_sigma, partitions, lookahead, context_overlap, schedule, guides,
                          sampler_name, scheduler, sigmas, sampler)
        path, ui_entry = _target(filename_prefix, output_path)
        model.prepare("unet", "vae")
        # The bar counts denoiser calls; decoding only checks cancel, window by window.
        run.into(pipeline.Mp4Sink(path, frame_rate, crf, decode_window, overlap),
                 runtime.progress_callback(SAMPLING, run.plan.denoiser_calls))
        return _result(path, ui_entry, run.chosen)
