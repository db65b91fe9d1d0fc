"""``python -m longvid_core``: LongVid's command line.

``smoke`` — an honest end-to-end run of the model code with a tiny random SVD (no weights, no
network): write it in the real SGM single-file layout, load it back with ``load_svd``, encode an
image, sample with the progressive rolling sampler, decode, and report what happened.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def smoke(args) -> int:
    import torch

    from . import load_svd, save_svd
    from .samplers import plan_progressive, sample_progressive
    from .schedules import get_sigmas_karras
    from .tiny import tiny_svd

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = save_svd(tiny_svd(seed=0), Path(tmp) / "svd_tiny.safetensors")
        model = load_svd(path)
        print(f"loaded {path.name}: UNet {sum(p.numel() for p in model.unet.parameters()):,} parameters, "
              f"channels {model.unet.config.block_out_channels}")
    image = torch.rand(1, args.size, args.size, 3, generator=torch.Generator().manual_seed(0))
    cond = model.encode_image(image, fps=6, motion_bucket_id=127, noise_aug_strength=0.02, seed=0)
    latent_shape = (1, 4, *cond.concat_latent.shape[-2:])
    sigmas = get_sigmas_karras(args.steps)
    plan = plan_progressive(args.frames, window=args.window, chunk=args.chunk, steps=args.steps)
    with torch.no_grad():
        latents = sample_progressive(model.denoise, cond, args.frames, latent_shape, sigmas,
                                     window=args.window, chunk=args.chunk, seed=0)
        frames = model.decode(latents)
    if not torch.isfinite(frames).all():
        print("smoke run FAILED: decoded frames are not finite", file=sys.stderr)
        return 1
    print(f"progressive sampler: {args.frames} frames, window {args.window}, chunk {args.chunk}, "
          f"{args.steps} steps, {plan.denoiser_calls} denoiser calls")
    print(f"decoded video: {tuple(frames.shape)} (B, F, H, W, 3), values in "
          f"[{frames.min().item():.3f}, {frames.max().item():.3f}]")
    print(f"smoke run OK in {time.perf_counter() - started:.1f} s (tiny random model: the frames are noise-like by design)")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longvid_core", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("smoke", help="end-to-end run of the model code with a tiny random SVD")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--window", type=int, default=4)
    p.add_argument("--chunk", type=int, default=2)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--size", type=int, default=32)
    p.set_defaults(func=smoke)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
