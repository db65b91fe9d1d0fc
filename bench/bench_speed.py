"""What deep-feature caching saves and costs, and torch.compile on the CPU, in one run.

    python bench/bench_speed.py          # 240 frames x 8 scenes, both small models (about 20 min on 2 cores)

For each small model (the one-level one, as SVD-XT and ExVideo were trained, and the bundled
progressive one) the setting `auto` runs on it is sampled with caching off and at a few
``cache_interval`` values. Per row: seconds per video, denoiser calls that reused deep features,
UNet work per output frame (frame-evaluations, and the share of UNet FLOPs actually run: a reused
call runs only the outer blocks, counted with torch's FLOP counter) and bench_quality.py's metrics
of the same videos; then every cached row as ratios to the uncached one. Last, torch.compile
(inductor) against eager on the bundled model: seconds per denoiser call on the rolling window.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_quality as quality  # noqa: E402

from longvid_core import load_svd, pipeline  # noqa: E402
from longvid_core.networks.vae import vae_downscale  # noqa: E402
from longvid_core.run.pipeline import FULL_SEQUENCE, PROGRESSIVE, SamplingSettings, resolve_auto  # noqa: E402
from longvid_core.evaluation.synthetic import random_scene  # noqa: E402

INTERVALS = (0, 1, 2)
COLUMNS = ("seconds", "reused", "evals_per_frame", "unet_work", "colour_drift", "seam", "persistence", "form",
           "jitter", "latent_z")
HEADER = ("s/video", "reused calls", "evals/frame", "UNet work/frame", "colour drift", "seam", "persistence", "form",
          "jitter", "latent z")
LABEL = 34


def reused_flop_share(model, frames: int, size: int) -> float:
    """FLOPs of a call that reuses deep features / a full call, on ``frames`` frames (batch 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    unet = model.unet
    latent = size // vae_downscale(model.vae)
    x = torch.randn(2, frames, unet.config.in_channels, latent, latent)
    inputs = (x, torch.zeros(2, frames), torch.randn(2, 1, unet.config.cross_attention_dim), torch.zeros(2, 3))
    counts = []
    with torch.no_grad():
        _, deep = unet(*inputs, keep_deep_features=True)
        for options in ({}, {"deep_features": deep}):
            with FlopCounterMode(display=False) as counter:
                unet(*inputs, **options)
            counts.append(counter.get_total_flops())
    return counts[1] / counts[0]


def print_row(label: str, row: dict) -> None:
    cells = []
    for column, head in zip(COLUMNS, HEADER):
        value = row.get(column, float("nan"))
        digits = 1 if column == "seconds" else 3 if column == "colour_drift" else 2
        cells.append(f"{value:>{len(head) + 2}.{digits}{'%' if column == 'reused' else 'f'}}")
    print(f"{label:<{LABEL}}" + "".join(cells), flush=True)


def bench_model(name: str, path: Path, frames: int, seeds: list[int]) -> dict[int, dict]:
    model = load_svd(path)
    defaults = pipeline.recommended_settings(path)
    size = defaults["width"]
    base = SamplingSettings(frames, PROGRESSIVE, defaults["window"], defaults["chunk"], defaults["steps"],
                            defaults["cfg"], defaults["min_cfg"])
    chosen, why = resolve_auto(model, replace(base, mode="auto"))
    clip = model.trained_for.clip_frames if model.trained_for and model.trained_for.clip_frames else \
        model.trained_frames
    share = reused_flop_share(model, chosen.frames_per_call, size)
    print(f"{name}: {why}; a reused call runs {share:.2f} of a full call's UNet FLOPs", flush=True)
    scenes = {seed: random_scene(seed, size, size) for seed in seeds}
    reference = torch.cat([quality.latent_stats(quality.sample(
        model, defaults, replace(base, mode=FULL_SEQUENCE, frames=clip, seed=seed), scenes[seed], size)[0])
        for seed in seeds])
    results = {}
    for interval in INTERVALS:
        measured = []
        for seed in seeds:
            settings = replace(chosen, seed=seed, cache_interval=interval)
            keyframes, _ = pipeline.condition_images(
                model, quality.render(scenes[seed], 1), size, size, fps=defaults["fps"],
                motion_bucket_id=defaults["motion_bucket_id"], noise_aug_strength=defaults["noise_aug_strength"],
                seed=seed)
            started = time.perf_counter()
            run = pipeline.prepare_run(model, keyframes, settings)
            latents = run.into(pipeline.LatentSink())
            seconds = time.perf_counter() - started
            video = pipeline.decode_into(model, latents, pipeline.ImageSink(defaults["decode_window"],
                                                                            defaults["decode_overlap"]))[0]
            metrics = quality.scene_metrics(video, scenes[seed], settings)
            metrics["latent_z"] = quality.latent_z(quality.latent_stats(latents), reference)
            evals = run.plan.evaluations_per_frame
            reused = run.cache.stats.reused_calls / run.cache.stats.calls if run.cache else 0.0
            reused_evals = (run.cache.stats.reused_frame_evaluations /
                            (run.cache.stats.reused_frame_evaluations + run.cache.stats.full_frame_evaluations)
                            if run.cache else 0.0)
            metrics.update(seconds=seconds, reused=reused, evals_per_frame=evals,
                           unet_work=evals * (1 - reused_evals + reused_evals * share))
            measured.append(metrics)
        mean = {k: quality.mean_of_measured([m[k] for m in measured]) for k in measured[0]}
        results[interval] = mean
        print_row(f"{name}: cache {'off' if interval == 0 else f'interval {interval}'}", mean)
    return results


def print_ratios(name: str, results: dict[int, dict]) -> None:
    off = results[0]
    for interval, row in results.items():
        if interval == 0:
            continue
        parts = [f"{key.replace('_', ' ')} {row[key] / off[key]:.2f}" for key in
                 ("seconds", "unet_work", "colour_drift", "seam", "persistence", "form", "jitter", "latent_z")
                 if off[key] and off[key] == off[key]]
        print(f"ratio {name}: cache interval {interval} / off: " + ", ".join(parts))


def bench_compile(path: Path, repeats: int = 20) -> None:
    """Seconds per denoiser call on the rolling window, inductor-compiled against eager."""
    defaults = pipeline.recommended_settings(path)
    size, frames = defaults["width"], defaults["window"] + defaults["chunk"]
    timings = {}
    for compiled in (False, True):
        model = load_svd(path, compile=compiled)
        gen = torch.Generator().manual_seed(0)
        latent = size // vae_downscale(model.vae)
        x = torch.randn(2, frames, 4, latent, latent, generator=gen)
        sigma = torch.rand(2, frames, generator=gen) * 10 + 0.01
        cond = pipeline.condition_images(model, torch.rand(1, size, size, 3, generator=gen), size, size)[0][0][1]
        cond = pipeline.SVDCond.cat([cond, cond.negative()])
        started = time.perf_counter()
        with torch.no_grad():
            model.denoise(x, sigma, cond)  # compiles (inductor builds C++ on the CPU)
            first = time.perf_counter() - started
            calls = []
            for _ in range(repeats):
                start = time.perf_counter()
                model.denoise(x, sigma, cond)
                calls.append(time.perf_counter() - start)
        timings[compiled] = (statistics.median(calls), first, model.unet.compile_problem if compiled else None)
    (eager, _, _), (fast, build, problem) = timings[False], timings[True]
    if problem:
        print(f"torch.compile on the CPU: fell back to eager ({problem})")
    print(f"torch.compile (inductor), bundled model, {frames} frames batch 2: {fast * 1e3:.1f} ms per call against "
          f"{eager * 1e3:.1f} ms eager: ratio {fast / eager:.2f}; the first call (compiling) took {build:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--progressive-model", type=Path, default=pipeline.BUNDLED_MODEL)
    p.add_argument("--one-level-model", type=Path, default=quality.ONE_LEVEL_MODEL)
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--no-compile", action="store_true", help="leave out the torch.compile timing")
    args = p.parse_args(argv)
    print(f"{args.frames} frames; scenes (seeds) {args.seeds}; cache intervals {list(INTERVALS)} (0: off)")
    print(f"{'model: cache':<{LABEL}}" + "".join(f"{h:>{len(h) + 2}}" for h in HEADER))
    results = {name: bench_model(name, path, args.frames, args.seeds)
               for name, path in (("one-level", args.one_level_model), ("progressive", args.progressive_model))}
    for name, rows in results.items():
        print_ratios(name, rows)
    if not args.no_compile:
        bench_compile(args.progressive_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
