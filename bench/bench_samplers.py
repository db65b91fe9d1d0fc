"""Samplers and schedulers by ComfyUI's names, in LongVid's modes: the same video in fewer steps?

For each small model (bench_quality.py says how they differ) and mode, every sampler x scheduler x
step count samples the same synthetic scenes (240 frames, seeds the models never trained on) and
the bench prints bench_quality.py's metrics (drift, seam, persistence, form, latent z), their
seed-to-seed spread (standard deviation over the scenes), full-UNet evaluations per output frame
and seconds per video. Then, per model and mode, for each sampler: the fewest evaluations per frame
at which it matches Euler + Karras at 24 steps, where *matches* means every quality metric's mean
lies within the reference's seed-to-seed spread (or the sampler's own, if larger) of the reference's
mean; and the ratio of those evaluations to the reference's (the issue's target: at most 0.6).

A step count the mode cannot run (progressive: not a multiple of window / chunk) is skipped and
said so. Every row is printed as it is measured.

    python bench/bench_samplers.py [--models bundled one-level] [--modes auto] [--seeds 0 1 2]
        [--samplers euler dpmpp_2m ...] [--schedulers karras align_your_steps ...]
        [--steps 4 6 8 12 16 24] [--frames 240]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_quality  # noqa: E402

from longvid_core import load_svd, pipeline  # noqa: E402
from longvid_core.evaluation.synthetic import random_scene  # noqa: E402

MODELS = {"bundled": pipeline.BUNDLED_MODEL, "one-level": bench_quality.ONE_LEVEL_MODEL}
HELD_OUT = 7_000_000  # scene seeds the small models never trained on (as bench_guides.py)
QUALITY = ("colour_drift", "contrast_drift", "seam", "persistence", "form", "latent_z")
REFERENCE = ("euler", "karras", 24)
LABEL = 52


def measure(model, defaults, settings, scenes, size, reference_stats) -> dict:
    rows, started = [], time.perf_counter()
    for seed, scene in scenes.items():
        latents, video, plan = bench_quality.sample(model, defaults, replace(settings, seed=seed), scene, size)
        metrics = bench_quality.scene_metrics(video, scene, settings)
        metrics["latent_z"] = bench_quality.latent_z(bench_quality.latent_stats(latents), reference_stats)
        metrics["evals_per_frame"] = plan.evaluations_per_frame
        rows.append(metrics)
    mean = {k: bench_quality.mean_of_measured([m[k] for m in rows]) for k in QUALITY + ("evals_per_frame",)}
    spread = {k: spread_of_measured([m[k] for m in rows]) for k in QUALITY}
    mean["seconds"] = (time.perf_counter() - started) / len(scenes)
    return {"mean": mean, "spread": spread}


def spread_of_measured(values: list[float]) -> float:
    """Seed-to-seed spread (population standard deviation) leaving out NaN (a video in which no shape
    was found has no form), as bench_quality.mean_of_measured leaves it out of the mean; 0 below two."""
    measured = [v for v in values if not math.isnan(v)]
    return statistics.pstdev(measured) if len(measured) > 1 else 0.0


def matches(row: dict, reference: dict) -> bool:
    """Every quality metric within the larger seed-to-seed spread of the reference's mean."""
    return all(abs(row["mean"][k] - reference["mean"][k]) <= max(row["spread"][k], reference["spread"][k])
               for k in QUALITY)


def print_row(label: str, row: dict) -> None:
    cells = "".join(f"{row['mean'][k]:>9.3f}±{row['spread'][k]:<6.3f}" for k in QUALITY)
    print(f"{label:<{LABEL}}{cells}{row['mean']['evals_per_frame']:>10.2f}{row['mean']['seconds']:>9.1f}",
          flush=True)


def bench(name: str, path: Path, mode: str, args) -> dict:
    model = load_svd(path)
    defaults = pipeline.recommended_settings(path)
    size = defaults["width"]
    base = pipeline.SamplingSettings(args.frames, mode, defaults["window"], defaults["chunk"], defaults["steps"],
                                     defaults["cfg"], defaults["min_cfg"])
    base, chosen = pipeline.resolve_auto(model, base)
    scenes = {seed: random_scene(HELD_OUT + seed, size, size) for seed in args.seeds}
    clip = model.trained_for.clip_frames if model.trained_for and model.trained_for.clip_frames else model.trained_frames
    reference_stats = __import__("torch").cat([bench_quality.latent_stats(bench_quality.sample(
        model, defaults, replace(base, mode=pipeline.FULL_SEQUENCE, frames=clip, seed=seed), scene, size)[0])
        for seed, scene in scenes.items()])
    print(f"# {name}: {chosen}; {len(scenes)} scenes x {args.frames} frames", flush=True)
    grid = [REFERENCE] + [(s, c, n) for s in args.samplers for c in args.schedulers for n in args.steps
                          if (s, c, n) != REFERENCE]
    results = {}
    for sampler_name, scheduler, steps in grid:
        settings = replace(base, sampler_name=sampler_name, scheduler=scheduler, steps=steps)
        label = f"{name}: {sampler_name} + {scheduler}, {steps} steps"
        problem = pipeline.settings_problem(settings.mode, settings.frames, settings.window, settings.chunk, steps,
                                            scheduler=scheduler)
        if problem:
            print(f"{label:<{LABEL}}skipped: {problem}", flush=True)
            continue
        results[(sampler_name, scheduler, steps)] = row = measure(model, defaults, settings, scenes, size,
                                                                  reference_stats)
        print_row(label, row)
    reference = results[REFERENCE]
    print(f"# {name}: fewest evaluations per frame matching euler + karras, 24 steps "
          f"({reference['mean']['evals_per_frame']:.2f}), within the seed-to-seed spread", flush=True)
    for sampler_name in args.samplers:
        found = sorted((row["mean"]["evals_per_frame"], scheduler, steps)
                       for (s, scheduler, steps), row in results.items() if s == sampler_name and matches(row, reference))
        if found:
            evals, scheduler, steps = found[0]
            print(f"{name}: {sampler_name:<16} {evals:7.2f} evals/frame ({scheduler}, {steps} steps): "
                  f"{evals / reference['mean']['evals_per_frame']:.2f} x the reference", flush=True)
        else:
            print(f"{name}: {sampler_name:<16} matches at no step count measured", flush=True)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--modes", nargs="+", default=["auto"], choices=list(pipeline.MODES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--samplers", nargs="+", default=list(pipeline.SAMPLER_NAMES), choices=pipeline.SAMPLER_NAMES)
    parser.add_argument("--schedulers", nargs="+", default=["karras", "exponential", "align_your_steps"],
                        choices=pipeline.SCHEDULER_NAMES)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 6, 8, 12, 16, 24])
    parser.add_argument("--frames", type=int, default=240)
    args = parser.parse_args(argv)
    print(f"{'':<{LABEL}}" + "".join(f"{k:>16}" for k in QUALITY) + f"{'evals/frame':>10}{'s/video':>9}")
    for name in args.models:
        for mode in args.modes:
            bench(name, MODELS[name], mode, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
