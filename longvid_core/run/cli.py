"""``longvid`` — LongVid's command line (also ``python -m longvid_core``).

``longvid generate`` parses its arguments and runs one :mod:`longvid_core.run.pipeline` run, the same
code the ComfyUI nodes run: first frame (an image file, a local text-to-image model, or — with
the bundled small model — a synthetic scene), conditioning, sampling streamed into an mp4.
``longvid smoke`` is a quick end-to-end check with a tiny random model.
"""

from __future__ import annotations

import signal
import sys
import tempfile
import time
from pathlib import Path

from ..problems import InputError, Problem, raise_problem
from ..progress import SAMPLING
from .cli_inputs import (EXIT_USER_ERROR, PROG, check_generate_args, error_line, guide_frames, load_model,
                         model_files, resolved_device, resolved_dtype, t2i_model_problem)
from .cli_parser import build_parser

EXIT_INTERRUPTED = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)


class Progress:
    """One-line progress on stderr counting denoiser calls (the real unit of work)."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total = total
        self.stream = stream
        self.started = time.perf_counter()
        # a terminal gets a live line; a log file gets a line every tenth of the way
        self.live = hasattr(stream, "isatty") and stream.isatty()
        self.every = max(1, total // 10)

    def __call__(self, progress) -> None:
        if progress.stage != SAMPLING:
            return
        if not self.live and progress.done % self.every and progress.done != self.total:
            return
        elapsed = time.perf_counter() - self.started
        rate = progress.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - progress.done) / rate if rate > 0 else float("nan")
        start, end = ("\r", "") if self.live else ("", "\n")
        self.stream.write(f"{start}denoiser calls {progress.done}/{self.total}  frames "
                          f"{progress.frames_done}/{progress.frames_total}  {elapsed:5.1f}s  eta {eta:5.1f}s {end}")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")


def load_image(path: Path):
    """An image file -> ``[1, H, W, 3]`` in 0..1, high bit depths scaled (:func:`inputs.read_image`)."""
    from .inputs import read_image

    return read_image(path, "--image")


def text_to_image(model_folder: Path, prompt: str, negative_prompt: str, width: int, height: int, seed: int,
                  device, steps: int = 25, dtype=None, quiet: bool = False):
    """First frame from a local diffusers text-to-image folder (no downloads).

    The pipeline lives only inside this call (the caller loads the video model afterwards), so a
    large image model and SVD are never in GPU memory together."""
    import torch
    from diffusers import AutoPipelineForText2Image

    raise_problem(t2i_model_problem(model_folder))
    pipe = AutoPipelineForText2Image.from_pretrained(str(model_folder), local_files_only=True, dtype=dtype)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=quiet)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    out = pipe(prompt, negative_prompt=negative_prompt or None, width=width, height=height,
               num_inference_steps=steps, generator=generator, output_type="pt")
    image = out.images.permute(0, 2, 3, 1).float().cpu()[:1]
    del pipe, out
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    return image


def synthetic_first_frame(seed: int, width: int, height: int):
    from ..evaluation.synthetic import random_scene, render

    return render(random_scene(seed, height, width), 1)


def _png_writer(folder: Path):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def save(first_index, frames):
        for i, frame in enumerate(frames):
            pixels = (frame.clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
            Image.fromarray(pixels).save(folder / f"frame_{first_index + i:06d}.png")

    return save


def prepare_video(args, overrides: dict | None = None):
    """What every video command does before loading the model: its model files checked, the
    settings (the model file's, then the flags, then ``overrides``), every input that can be judged
    without the model, and the mp4 sink (not opened yet)."""
    import torch

    from . import pipeline
    from .inputs import model_file_problem

    svd_path = Path(args.svd) if args.svd else pipeline.BUNDLED_MODEL
    for name, path, kind in model_files(args, svd_path):
        problem = model_file_problem(path, kind, name)
        if problem and not args.svd and kind == "svd":
            problem = Problem("--svd", problem.expected, f"{problem.found} (the bundled small model is missing: see "
                              "tools/small_model/README.md)")
        raise_problem(problem)
    settings = pipeline.recommended_settings(svd_path)
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    settings.update(overrides or {})
    sampling = pipeline.SamplingSettings(
        frames=settings["frames"], mode=args.mode, window=settings["window"], chunk=settings["chunk"],
        steps=settings["steps"], cfg=settings["cfg"], min_cfg=settings["min_cfg"], seed=args.seed,
        context_sigma=settings["context_sigma"], partitions=args.partitions, lookahead=args.lookahead,
        context_overlap=args.context_overlap, cache_interval=args.cache_interval, scheduler=args.scheduler,
        sampler_name=args.sampler_name)
    check_generate_args(args, settings, sampling)  # refuse what can be refused before loading anything
    if args.threads:
        torch.set_num_threads(args.threads)
    args.sink = pipeline.Mp4Sink(Path(args.out), settings["output_fps"], window=settings["decode_window"],
                                 overlap=settings["decode_overlap"],
                                 on_frames=_png_writer(Path(args.save_frames)) if args.save_frames else None)
    return svd_path, settings, sampling  # main() reports what an interrupted run kept in args.sink


def render(args, model, keyframes, settings, sampling, started, guides=(), loop_latent=None) -> int:
    """Plan the run (every check before sampling), sample it into the mp4, say what was done."""
    from . import pipeline

    run = pipeline.prepare_run(model, keyframes, sampling, guides=guides, loop_latent=loop_latent)
    for note in run.notes:
        print(f"warning: {note}", file=sys.stderr)
    if not args.quiet:
        print(run.chosen, file=sys.stderr)
    progress = None if args.quiet else Progress(run.plan.denoiser_calls)
    written = run.into(args.sink, progress)
    if progress is not None:
        progress.close()
    print(f"{written} frames {settings['width']}x{settings['height']}, {run.settings.describe()}, "
          f"{run.plan.denoiser_calls} denoiser calls, {time.perf_counter() - started:.1f} s")
    if run.cache is not None:
        print(run.cache.stats.describe())
    print(Path(args.out).resolve())
    return 0


def loaded_model(args, svd_path, device, dtype):
    model = load_model(args, svd_path, device, dtype)
    for warning in model.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return model


def condition(model, image, settings, seed: int):
    from . import pipeline

    return pipeline.condition_images(model, image, settings["width"], settings["height"], fps=settings["fps"],
                                     motion_bucket_id=settings["motion_bucket_id"],
                                     noise_aug_strength=settings["noise_aug_strength"], seed=seed)


def say(notes) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def generate(args) -> int:
    from ..weights.loading import resolve_dtype
    from . import pipeline
    from .inputs import read_image

    svd_path, settings, sampling = prepare_video(args)
    device = resolved_device(args.device)
    dtype = resolved_dtype(args.dtype, device)
    started = time.perf_counter()
    width, height = settings["width"], settings["height"]
    pictures = [(frame, strength, read_image(picture, flag_name))  # every picture read before anything loads
                for flag_name, picture, frame, strength in guide_frames(args, sampling.frames)]
    if args.image:
        image = load_image(Path(args.image))
    elif args.prompt:  # before the video model is loaded: the two never share the GPU
        image = text_to_image(Path(args.t2i_model), args.prompt, args.negative_prompt, width, height,
                              args.seed, device, steps=args.t2i_steps, dtype=resolve_dtype(dtype), quiet=args.quiet)
    else:
        image = synthetic_first_frame(args.seed, width, height)
    model = loaded_model(args, svd_path, device, dtype)
    keyframes, fitted = condition(model, image, settings, args.seed)
    if args.save_first_frame:
        from PIL import Image

        Image.fromarray((fitted[0].numpy() * 255).round().astype("uint8")).save(args.save_first_frame)
    guides = []
    for frame, strength, picture in pictures:
        made, notes = pipeline.guides_from_images(model, picture, [frame], [strength], width, height,
                                                  method=args.guide_method, anchors_like=keyframes[0][1],
                                                  seed=args.seed + frame)
        guides += made
        say(notes)
    loop_latent = None
    if args.loop:
        loop_latent = pipeline.guides_from_images(model, fitted[:1], [0], [1.0], width, height)[0][0].latent
    return render(args, model, keyframes, settings, sampling, started, guides, loop_latent)


def from_input_video(args, factor: int = 1, strength: float | None = None) -> int:
    """``interpolate`` (every ``factor``-th frame an input frame) and ``refine`` (every frame pulled
    toward the input at ``strength``): the input video read and checked before anything loads, its
    first frame the conditioning image (:mod:`.cascade`)."""
    from . import cascade
    from .inputs import read_input_video

    video, fps = read_input_video(args.input)
    raise_problem(cascade.cascade_problem(video.shape[0], factor if factor > 1 else None, strength))
    rate = fps * factor
    overrides = {"frames": cascade.interpolated_frames(video.shape[0], factor)}
    if args.output_fps is None:
        overrides["output_fps"] = float(rate)
    if args.fps is None:  # SVD's fps conditioning: the output's rate
        overrides["fps"] = max(1, round(rate))
    svd_path, settings, sampling = prepare_video(args, overrides)
    device = resolved_device(args.device)
    dtype = resolved_dtype(args.dtype, device)
    started = time.perf_counter()
    width, height = settings["width"], settings["height"]
    model = loaded_model(args, svd_path, device, dtype)
    keyframes, _ = condition(model, video[:1], settings, args.seed)
    if strength is None:
        guides, notes = cascade.interpolation_guides(model, video, factor, width, height, args.guide_method,
                                                     keyframes[0][1])
    else:
        guides, notes = cascade.refine_guides(model, video, strength, width, height)
    say(notes)
    return render(args, model, keyframes, settings, sampling, started, guides)


def interpolate(args) -> int:
    return from_input_video(args, factor=args.factor)


def refine(args) -> int:
    return from_input_video(args, strength=args.strength)


def smoke(args) -> int:
    import torch

    from ..evaluation.tiny import tiny_svd
    from ..weights.loading import load_svd, save_svd
    from . import pipeline

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_svd(tiny_svd(seed=0), Path(tmp) / "svd_tiny.safetensors")
        model = load_svd(path)
        print(f"loaded {path.name}: UNet {sum(p.numel() for p in model.unet.parameters()):,} parameters, "
              f"channels {model.unet.config.block_out_channels}")
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    keyframes, _ = pipeline.condition_images(model, image, args.size, args.size)
    settings = pipeline.SamplingSettings(args.frames, window=args.window, chunk=args.chunk, steps=args.steps)
    run = pipeline.prepare_run(model, keyframes, settings)
    frames = run.into(pipeline.ImageSink())
    if not torch.isfinite(frames).all():
        print("smoke run FAILED: decoded frames are not finite", file=sys.stderr)
        return 1
    print(f"progressive sampler: {args.frames} frames, window {args.window}, chunk {args.chunk}, "
          f"{args.steps} steps, {run.plan.denoiser_calls} denoiser calls")
    print(f"decoded video: {tuple(frames.shape)} (B, F, H, W, 3), values in "
          f"[{frames.min().item():.3f}, {frames.max().item():.3f}]")
    print(f"smoke run OK in {time.perf_counter() - started:.1f} s (tiny random model: the frames are noise-like by design)")
    return 0


COMMANDS = {"generate": generate, "interpolate": interpolate, "refine": refine, "smoke": smoke}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that open files are finished on the way out."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None) -> int:
    """Run a subcommand. A user error is one line on stderr and exit 2; an interruption (Ctrl-C,
    SIGTERM) says what was kept and exits 130; anything else is a bug and keeps its traceback."""
    args = build_parser().parse_args(argv)  # --help and a bad flag answer here, before torch loads
    from ..networks.nonfinite import NonFiniteError
    from ..weights.checkpoint_io import CheckpointError

    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return COMMANDS[args.command](args)
    except InputError as e:
        print(error_line(e.problem), file=sys.stderr)
    except (CheckpointError, NonFiniteError) as e:
        print(error_line(str(e)), file=sys.stderr)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as e:
        print(error_line(f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)), file=sys.stderr)
    except KeyboardInterrupt as e:
        kept = _kept(args) or "no frame was finished, no file written"
        print(f"{PROG}: {'terminated' if isinstance(e, Terminated) else 'interrupted'}; {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if _kept(args):
        print(f"{PROG}: {_kept(args)}", file=sys.stderr)
    return EXIT_USER_ERROR


def _kept(args) -> str | None:
    """What a stopped run left: its partial video's frames and name, or None."""
    writer = getattr(getattr(args, "sink", None), "writer", None)
    if writer is None or writer.kept_path is None:
        return None
    return f"{writer.frames_written} finished frames kept in {writer.kept_path}"
