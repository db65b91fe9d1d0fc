"""``longvid`` — LongVid's command line (also ``python -m longvid_core``).

``longvid generate`` parses its arguments and runs one :mod:`longvid_core.pipeline` run, the same
code the ComfyUI nodes run: first frame (an image file, a local text-to-image model, or — with
the bundled small model — a synthetic scene), conditioning, sampling streamed into an mp4.
``longvid smoke`` is a quick end-to-end check with a tiny random model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .pipeline import AUTO, BUNDLED_MODEL, MODES, recommended_settings
from .progress import SAMPLING


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
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as img:
        array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None]


def text_to_image(model_folder: Path, prompt: str, negative_prompt: str, width: int, height: int, seed: int,
                  device, steps: int = 25, dtype=None, quiet: bool = False):
    """First frame from a local diffusers text-to-image folder (no downloads).

    The pipeline lives only inside this call (the caller loads the video model afterwards), so a
    large image model and SVD are never in GPU memory together."""
    import torch
    from diffusers import AutoPipelineForText2Image

    if not Path(model_folder).is_dir():
        raise FileNotFoundError(f"--t2i-model: expected a local diffusers folder (model_index.json); found {model_folder}")
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
    from .synthetic import random_scene, render

    return render(random_scene(seed, height, width), 1)


def _png_writer(folder: Path):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def save(first_index, frames):
        for i, frame in enumerate(frames):
            pixels = (frame.clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
            Image.fromarray(pixels).save(folder / f"frame_{first_index + i:06d}.png")

    return save


def generate(args) -> int:
    import torch

    from . import load_svd, pipeline
    from .loading import resolve_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    svd_path = Path(args.svd) if args.svd else BUNDLED_MODEL
    if not svd_path.exists():
        raise FileNotFoundError(f"--svd: no model at {svd_path}" + (
            "" if args.svd else " (the bundled small model is missing: see tools/small_model/README.md)"))
    settings = recommended_settings(svd_path)
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    sampling = pipeline.SamplingSettings(
        frames=settings["frames"], mode=args.mode, window=settings["window"], chunk=settings["chunk"],
        steps=settings["steps"], cfg=settings["cfg"], min_cfg=settings["min_cfg"], seed=args.seed,
        context_sigma=settings["context_sigma"], partitions=args.partitions, lookahead=args.lookahead,
        context_overlap=args.context_overlap, cache_interval=args.cache_interval)
    pipeline.check_settings(sampling)  # refuse impossible settings before loading anything
    sink = pipeline.Mp4Sink(Path(args.out), settings["output_fps"], window=settings["decode_window"],
                            overlap=settings["decode_overlap"],
                            on_frames=_png_writer(Path(args.save_frames)) if args.save_frames else None)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype or ("fp16" if device.startswith("cuda") else "fp32")
    started = time.perf_counter()
    width, height = settings["width"], settings["height"]
    if args.prompt and args.image:
        raise ValueError("give one first frame: --image or --prompt, not both")
    if args.prompt and not args.t2i_model:
        raise ValueError("--prompt needs --t2i-model: a local diffusers text-to-image folder for the first frame")
    if args.prompt:  # before the video model is loaded: the two never share the GPU
        image = text_to_image(Path(args.t2i_model), args.prompt, args.negative_prompt, width, height,
                              args.seed, device, steps=args.t2i_steps, dtype=resolve_dtype(dtype), quiet=args.quiet)
    elif args.image:
        image = load_image(Path(args.image))
    else:
        image = synthetic_first_frame(args.seed, width, height)
    model = load_svd(svd_path, extension=args.extension, device=device, dtype=dtype, lora=args.lora,
                     lora_strength=args.lora_strength, compile=args.compile or False)
    for warning in model.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    keyframes, fitted = pipeline.condition_images(
        model, image, width, height, fps=settings["fps"], motion_bucket_id=settings["motion_bucket_id"],
        noise_aug_strength=settings["noise_aug_strength"], seed=args.seed)
    if args.save_first_frame:
        from PIL import Image

        Image.fromarray((fitted[0].numpy() * 255).round().astype("uint8")).save(args.save_first_frame)
    run = pipeline.prepare_run(model, keyframes, sampling)
    if not args.quiet:
        print(run.chosen, file=sys.stderr)
    progress = None if args.quiet else Progress(run.plan.denoiser_calls)
    written = run.into(sink, progress)
    if progress is not None:
        progress.close()
    print(f"{written} frames {width}x{height}, {run.settings.describe()}, {run.plan.denoiser_calls} denoiser calls, "
          f"{time.perf_counter() - started:.1f} s")
    if run.cache is not None:
        print(run.cache.stats.describe())
    print(Path(args.out).resolve())
    return 0


def smoke(args) -> int:
    import torch

    from . import load_svd, pipeline, save_svd
    from .tiny import tiny_svd

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longvid", description="LongVid: long videos with SVD / ExVideo-SVD "
                                     "and progressive rolling sampling.")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="make a video (with no weights given: the bundled small model)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--svd", help="SVD checkpoint (SGM single file or diffusers folder); default: bundled small model")
    g.add_argument("--extension", help="ExVideo (DiffSynth) or LongVid extension file")
    g.add_argument("--lora", help="LongVid LoRA file (from training/train.py --mode lora), merged after --extension")
    g.add_argument("--lora-strength", type=float, default=1.0, help="scale of --lora's update (0: the base as is)")
    g.add_argument("--image", help="first frame image file")
    g.add_argument("--prompt", help="make the first frame with --t2i-model from this prompt")
    g.add_argument("--negative-prompt", default="", help="negative prompt for --t2i-model")
    g.add_argument("--t2i-model", help="local diffusers text-to-image folder (with model_index.json; loaded with "
                   "AutoPipelineForText2Image, no downloads) for --prompt, at --width x --height, seeded by --seed")
    g.add_argument("--t2i-steps", type=int, default=25, help="denoising steps of --t2i-model (--steps is the video's)")
    g.add_argument("--out", default="longvid.mp4", help="output mp4")
    g.add_argument("--save-frames", help="also write every frame as PNG into this folder")
    g.add_argument("--decode-window", type=int, help="latent frames the temporal VAE decodes together (memory); "
                   "default: the model file's, else 14 (SVD's clip length)")
    g.add_argument("--decode-overlap", type=int, help="frames shared and cross-faded by consecutive decode windows "
                   "(at most half the window); default: the model file's, else 4")
    g.add_argument("--save-first-frame", help="write the conditioning frame as PNG")
    g.add_argument("--mode", choices=MODES, default=AUTO, help="auto: progressive as trained for weights LongVid's "
                   "trainer fine-tuned progressively, else the best training-free setting (printed)")
    g.add_argument("--partitions", type=int, default=1, help="progressive: split each row's window into this many "
                   "calls, each spanning fewer noise levels (for weights trained with one level per clip)")
    g.add_argument("--lookahead", action="store_true", help="progressive: each partition also sees the one ahead")
    g.add_argument("--cache-interval", type=int, default=0, help="reuse the UNet's deep features on up to this "
                   "many calls after each full call on the same frames (DeepCache; 0: off)")
    g.add_argument("--context-overlap", type=int, help="context_windows: frames shared by windows of window + chunk "
                   "frames (default: a quarter of a window)")
    for name, kind in (("frames", int), ("window", int), ("chunk", int), ("steps", int), ("cfg", float),
                       ("min-cfg", float), ("width", int), ("height", int), ("fps", int),
                       ("motion-bucket-id", int), ("noise-aug-strength", float), ("output-fps", int)):
        g.add_argument(f"--{name}", type=kind, default=None, help="default: the model's recommended value")
    g.add_argument("--context-sigma", type=float, help="progressive: give the finished chunk in front to the model "
                   "noised at this sigma (for models trained with --progressive-context-sigma); default: the model "
                   "file's, else clean")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="default: fp16 on GPU, fp32 on CPU")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    g.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the UNet (default backend inductor); runs uncompiled, with a warning, "
                   "where compiling fails")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=generate)
    s = sub.add_parser("smoke", help="end-to-end run of the model code with a tiny random SVD")
    s.add_argument("--frames", type=int, default=12)
    s.add_argument("--window", type=int, default=4)
    s.add_argument("--chunk", type=int, default=2)
    s.add_argument("--steps", type=int, default=4)
    s.add_argument("--size", type=int, default=16)
    s.set_defaults(func=smoke)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
