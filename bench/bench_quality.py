"""Long-video quality on the synthetic domain: progressive (PA-VDM) vs replacement vs full-sequence.

Runs LongVid's bundled small model (trained on synthetic moving shapes, see
tools/small_model/README.md) from synthetic first frames, 240+ frames per video, and prints
metrics that need no downloaded weights (``longvid_core.video_metrics``):

- drift: colour / brightness / contrast change over the video (fitted slope × length), lower is better;
- seam: frame-difference at window boundaries over the median difference (1 = no seam);
- persistence: fraction of (shape, frame) pairs in which a first-frame shape is still there, with
  its colour and roughly its size (the generator knows what should be in the frame);
- form: of those, the fraction that still has its own outline (disc, square or diamond) rather
  than another kind's, e.g. a square gone round;
- speed / jitter: how far those shapes' centres move per frame, and how jerkily (px/frame and
  px/frame^2; compare with the first row: bounces and overlaps make true motion jitter a little).

The first rows score the scene's true continuation (rendered by the generator), as it is and
after a round trip through the model's VAE: the ceilings for persistence and form, which are below 1
because shapes pass behind one another (and the VAE loses some detail).

    python bench/bench_quality.py [--frames 240] [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvid_core import load_svd, pipeline  # noqa: E402
from longvid_core.frames import encode_frames  # noqa: E402
from longvid_core.pipeline import BUNDLED_MODEL, FULL_SEQUENCE, MODES, PROGRESSIVE  # noqa: E402
from longvid_core.synthetic import random_scene, render, shape_areas  # noqa: E402
from longvid_core.video_metrics import drift, seam_score, shape_form, shape_motion, shape_persistence  # noqa: E402


GROUND_TRUTH = "ground truth (true motion)"
VAE_ROUND_TRIP = "ground truth through the VAE"


def boundaries(mode: str, frames: int, window: int, chunk: int) -> list[int]:
    """Frames where new material starts: a new replacement window, or a new progressive chunk."""
    if mode in (FULL_SEQUENCE, GROUND_TRUTH, VAE_ROUND_TRIP):
        return []
    step = chunk if mode == PROGRESSIVE else window
    return list(range(step, frames, step))


def run(model, settings: dict, mode: str, frames: int, seed: int):
    size = settings["width"]
    scene = random_scene(seed, size, size)
    image = render(scene, 1)
    sink = pipeline.ImageSink(settings["decode_window"], settings["decode_overlap"])
    if mode == GROUND_TRUTH:
        video = render(scene, frames)
    elif mode == VAE_ROUND_TRIP:  # decoded as `longvid generate` decodes
        video = pipeline.decode_into(model, encode_frames(model.vae, render(scene, frames)), sink)[0]
    else:
        keyframes, _ = pipeline.condition_images(
            model, image, size, size, fps=settings["fps"], motion_bucket_id=settings["motion_bucket_id"],
            noise_aug_strength=settings["noise_aug_strength"], seed=seed)
        sampling = pipeline.SamplingSettings(frames, mode, settings["window"], settings["chunk"], settings["steps"],
                                             settings["cfg"], settings["min_cfg"], seed, settings["context_sigma"])
        video = pipeline.generate(model, keyframes, sampling, sink)[0]
    colors, areas = [s.color for s in scene.shapes], shape_areas(scene)
    metrics = drift(video)
    metrics["seam"] = seam_score(video, boundaries(mode, frames, settings["window"], settings["chunk"]))
    metrics["persistence"] = shape_persistence(video, colors, areas)
    metrics["form"] = shape_form(video, colors, areas, [s.kind for s in scene.shapes])
    metrics.update(shape_motion(video, colors, areas))
    return metrics


def mean_of_measured(values: list[float]) -> float:
    """Mean leaving out NaN (a video in which no shape was ever found has no speed); NaN if all are."""
    measured = [v for v in values if not math.isnan(v)]
    return statistics.mean(measured) if measured else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--svd", type=Path, default=BUNDLED_MODEL)
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--modes", nargs="+", default=list(MODES))
    p.add_argument("--context-sigma", type=float, help="progressive context noise (default: the model file's)")
    args = p.parse_args(argv)
    settings = pipeline.recommended_settings(args.svd)
    if args.context_sigma is not None:
        settings["context_sigma"] = args.context_sigma
    model = load_svd(args.svd)
    print(f"model {args.svd.name}; {args.frames} frames; window {settings['window']} chunk {settings['chunk']} "
          f"steps {settings['steps']}; context sigma {settings['context_sigma']}; seeds {args.seeds}")
    print(f"{'mode':<28}{'colour drift':>13}{'contrast drift':>15}{'seam':>7}{'persistence':>12}{'form':>6}"
          f"{'speed':>7}{'jitter':>7}{'s/video':>9}")
    results = {}
    for mode in [GROUND_TRUTH, VAE_ROUND_TRIP, *args.modes]:
        rows, started = [], time.perf_counter()
        for seed in args.seeds:
            rows.append(run(model, settings, mode, args.frames, seed))
        seconds = (time.perf_counter() - started) / len(args.seeds)
        mean = {k: mean_of_measured([r[k] for r in rows]) for k in rows[0]}
        results[mode] = mean
        print(f"{mode:<28}{mean['colour_drift']:>13.3f}{mean['contrast_drift']:>15.3f}{mean['seam']:>7.2f}"
              f"{mean['persistence']:>12.2f}{mean['form']:>6.2f}{mean['speed']:>7.2f}{mean['jitter']:>7.2f}"
              f"{seconds:>9.1f}", flush=True)
    if PROGRESSIVE in results:
        base = results[PROGRESSIVE]
        for mode, r in results.items():
            if mode in MODES and mode != PROGRESSIVE:
                print(f"ratio {mode} / progressive: colour drift "
                      f"{r['colour_drift'] / max(base['colour_drift'], 1e-6):.2f}, seam {r['seam'] / base['seam']:.2f}, "
                      f"persistence {r['persistence'] / max(base['persistence'], 1e-6):.2f}, "
                      f"form {r['form'] / max(base['form'], 1e-6):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
