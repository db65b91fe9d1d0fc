"""Long-video quality on the synthetic domain: which rolling setting to run on which weights.

Two small models with SVD's architecture, trained on synthetic moving shapes
(tools/small_model/README.md) by the same recipe except for the noise levels: the bundled model,
fine-tuned with progressive (per-frame) noise, stands in for fine-tuned weights; the one-level
model, trained with one noise level per clip only, stands in for SVD-XT and the ExVideo release.
Each samples every setting from synthetic first frames, 240 frames per video, and the bench prints
metrics that need no downloaded weights (``longvid_core.evaluation.video_metrics``):

- colour / contrast drift: change over the video (fitted slope x length), lower is better;
- seam: frame difference at window boundaries over the median difference (1 = no seam);
- persistence: fraction of (shape, frame) pairs in which a first-frame shape is still there, with
  its colour and roughly its size; form: of those, the fraction that keeps its own outline;
- speed / jitter: how far those shapes' centres move per frame, and how jerkily;
- latent z: how far each frame's latent statistics (mean and spread of each channel) sit from what
  the same model produces for a normal clip (full sequence at its trained length), in standard
  deviations of those, averaged over the last quarter of the video: drift the shape metrics miss;
- evals/frame: latent frames the model evaluates per output frame; s/video: seconds per video.

The first rows score the scenes' true continuation, as rendered and through the model's VAE.

    python bench/bench_quality.py [--frames 240] [--seeds 0 1 2 3 4 5 6 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvid_core import load_svd, pipeline, sampling  # noqa: E402
from longvid_core.run.frames import encode_frames  # noqa: E402
from longvid_core.run.pipeline import (  # noqa: E402
    BUNDLED_MODEL,
    CONTEXT_WINDOWS,
    FULL_SEQUENCE,
    PROGRESSIVE,
    TRAINING_FREE_OPTIONS,
    SamplingSettings,
    training_free,
)
from longvid_core.evaluation.synthetic import random_scene, render, shape_areas  # noqa: E402
from longvid_core.evaluation.video_metrics import drift, seam_score, shape_form, shape_motion, shape_persistence  # noqa: E402

ONE_LEVEL_MODEL = Path(__file__).resolve().parent / "assets" / "longvid_small_one_level.safetensors"
GROUND_TRUTH = "ground truth (true motion)"
VAE_ROUND_TRIP = "ground truth through the VAE"
TRAINED_LENGTH = "full_sequence_trained_length"
# row name -> the settings of that row, from the model's recommended progressive settings: every
# training-free option `auto` may pick, and a normal clip for reference
SETTINGS = {name: (lambda base, clip, name=name: training_free(base, name)) for name in TRAINING_FREE_OPTIONS}
SETTINGS[TRAINED_LENGTH] = lambda base, clip: replace(base, mode=FULL_SEQUENCE, frames=clip)
COLUMNS = ("colour_drift", "contrast_drift", "seam", "persistence", "form", "speed", "jitter", "latent_z",
           "evals_per_frame", "seconds")
HEADER = ("colour drift", "contrast drift", "seam", "persistence", "form", "speed", "jitter", "latent z",
          "evals/frame", "s/video")
LABEL = 46


def boundaries(settings: SamplingSettings | None, frames: int) -> list[int]:
    """Frames where new material starts: a new progressive chunk, replacement or context window."""
    if settings is None or settings.mode == FULL_SEQUENCE:
        return []
    if settings.mode == CONTEXT_WINDOWS:
        return [w.start for w in sampling.context_windows(frames, settings.context_length,
                                                                   settings.overlap)[1:]]
    step = settings.chunk if settings.mode == PROGRESSIVE else settings.window
    return list(range(step, frames, step))


def latent_stats(latents: torch.Tensor) -> torch.Tensor:
    """Per frame: each channel's mean and standard deviation, ``[F, 2C]`` (``latents[1, F, C, h, w]``)."""
    flat = latents[0].flatten(2).double()
    return torch.cat([flat.mean(2), flat.std(2)], dim=1)


def latent_z(stats: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean |z| of the last quarter of the frames' statistics against the reference frames'."""
    mean, spread = reference.mean(0), reference.std(0).clamp_min(1e-6)
    tail = stats[-max(1, stats.shape[0] // 4):]
    return ((tail - mean) / spread).abs().mean().item()


def scene_metrics(video: torch.Tensor, scene, settings: SamplingSettings | None) -> dict[str, float]:
    colors, areas = [s.color for s in scene.shapes], shape_areas(scene)
    metrics = drift(video)
    metrics["seam"] = seam_score(video, boundaries(settings, video.shape[0]))
    metrics["persistence"] = shape_persistence(video, colors, areas)
    metrics["form"] = shape_form(video, colors, areas, [s.kind for s in scene.shapes])
    metrics.update(shape_motion(video, colors, areas))
    return metrics


def sample(model, defaults: dict, settings: SamplingSettings, scene, size: int):
    """Latents and decoded frames of one video, decoded as `longvid generate` decodes."""
    keyframes, _ = pipeline.condition_images(
        model, render(scene, 1), size, size, fps=defaults["fps"], motion_bucket_id=defaults["motion_bucket_id"],
        noise_aug_strength=defaults["noise_aug_strength"], seed=settings.seed)
    run = pipeline.prepare_run(model, keyframes, settings)
    latents = run.into(pipeline.LatentSink())
    video = pipeline.decode_into(model, latents, pipeline.ImageSink(defaults["decode_window"],
                                                                    defaults["decode_overlap"]))[0]
    return latents, video, run.plan


def mean_of_measured(values: list[float]) -> float:
    """Mean leaving out NaN (a video in which no shape was ever found has no speed); NaN if all are."""
    measured = [v for v in values if not math.isnan(v)]
    return statistics.mean(measured) if measured else float("nan")


def print_row(label: str, row: dict) -> None:
    widths = [len(h) + 2 for h in HEADER]
    cells = [f"{row.get(c, float('nan')):>{w}.{1 if c == 'seconds' else 2 if c in ('seam', 'evals_per_frame') else 3 if 'drift' in c else 2}f}"
             for c, w in zip(COLUMNS, widths)]
    print(f"{label:<{LABEL}}" + "".join(cells), flush=True)


def bench_model(name: str, path: Path, frames: int, seeds: list[int], rows: list[str]) -> dict[str, dict]:
    model = load_svd(path)
    defaults = pipeline.recommended_settings(path)
    size = defaults["width"]
    base = SamplingSettings(frames, PROGRESSIVE, defaults["window"], defaults["chunk"], defaults["steps"],
                            defaults["cfg"], defaults["min_cfg"])
    clip = model.trained_for.clip_frames if model.trained_for and model.trained_for.clip_frames else \
        model.trained_frames
    scenes = {seed: random_scene(seed, size, size) for seed in seeds}
    reference = torch.cat([latent_stats(sample(model, defaults, replace(base, mode=FULL_SEQUENCE, frames=clip,
                                                                        seed=seed), scenes[seed], size)[0])
                           for seed in seeds])
    results = {}
    for row in rows:
        measured, started = [], time.perf_counter()
        for seed in seeds:
            settings = replace(SETTINGS[row](base, clip), seed=seed)
            latents, video, plan = sample(model, defaults, settings, scenes[seed], size)
            metrics = scene_metrics(video, scenes[seed], settings)
            metrics["latent_z"] = latent_z(latent_stats(latents), reference)
            metrics["evals_per_frame"] = plan.evaluations_per_frame
            measured.append(metrics)
        mean = {k: mean_of_measured([m[k] for m in measured]) for k in measured[0]}
        mean["seconds"] = (time.perf_counter() - started) / len(seeds)
        results[row] = mean
        print_row(f"{name}: {row}", mean)
    return results


def ground_truth_rows(path: Path, frames: int, seeds: list[int]) -> None:
    model = load_svd(path)
    defaults = pipeline.recommended_settings(path)
    size = defaults["width"]
    for label in (GROUND_TRUTH, VAE_ROUND_TRIP):
        measured, started = [], time.perf_counter()
        for seed in seeds:
            scene = random_scene(seed, size, size)
            video = render(scene, frames)
            if label == VAE_ROUND_TRIP:
                sink = pipeline.ImageSink(defaults["decode_window"], defaults["decode_overlap"])
                video = pipeline.decode_into(model, encode_frames(model.vae, video), sink)[0]
            measured.append(scene_metrics(video, scene, None))
        mean = {k: mean_of_measured([m[k] for m in measured]) for k in measured[0]}
        mean["seconds"] = (time.perf_counter() - started) / len(seeds)
        print_row(label, mean)


def print_ratios(name: str, results: dict[str, dict]) -> None:
    base = results.get("progressive")
    if base is None:
        return
    for row, r in results.items():
        if row == "progressive":
            continue
        parts = [f"{key.replace('_', ' ')} {r[key] / base[key]:.2f}" if base[key] and not math.isnan(base[key])
                 else f"{key.replace('_', ' ')} n/a" for key in ("colour_drift", "seam", "persistence", "form",
                                                                 "latent_z", "evals_per_frame")]
        print(f"ratio {name}: {row} / progressive: " + ", ".join(parts))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--progressive-model", type=Path, default=BUNDLED_MODEL,
                   help="weights fine-tuned progressively (default: the bundled small model)")
    p.add_argument("--one-level-model", type=Path, default=ONE_LEVEL_MODEL,
                   help="weights trained with one noise level per clip (tools/small_model/build_one_level.sh)")
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args(argv)
    for path in (args.progressive_model, args.one_level_model):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model missing; the one-level model is built by "
                                    "tools/small_model/build_one_level.sh")
    print(f"{args.frames} frames; scenes (seeds) {args.seeds}; progressive model {args.progressive_model.name}, "
          f"one-level model {args.one_level_model.name}")
    print(f"{'model: setting':<{LABEL}}" + "".join(f"{h:>{len(h) + 2}}" for h in HEADER))
    ground_truth_rows(args.progressive_model, args.frames, args.seeds)
    results = {}
    for name, path in (("one-level", args.one_level_model), ("progressive", args.progressive_model)):
        results[name] = bench_model(name, path, args.frames, args.seeds, args.settings)
    for name, rows in results.items():
        print_ratios(name, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
