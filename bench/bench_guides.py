"""Guide frames on held-out synthetic scenes: does the video reach the keyframes, and what happens
between and around them.

Both small models (bench_quality.py says how they differ) sample each scene's video from its true
first frame, with keyframes every ``--every`` frames taken from the true video (rendered by
``longvid_core.evaluation.synthetic`` from seeds the small models never trained on). Rows:

- no keyframes: the first frame only;
- conditioning switch: today's keyframes, the image conditioning switches to keyframe k at its
  frame (LongVidCondition's keyframe_starts);
- guides held / clean / time reversal: the keyframes as strength-1 guide frames by each method of
  sampling/guides.py (the model sees them noised to each step's level; clean, as context frames;
  held and, in one-level modes, the frames before them also run backward from their picture), the
  conditioning staying the first frame's;
- guides held + switch: held guides and the conditioning switch;
- cross-fade: no model, each frame between two keyframes a linear mix of their VAE round trips;
- VAE round trip: the true video through the model's VAE, what a decoded guide can at best be.

Columns: PSNR (dB) of the decoded frames at the keyframes against the true pictures, and of the
frames between against the true video; the seam at the keyframes (frame difference there over the
median difference, 1 = no jump); colour drift over the video; latent frames evaluated per output
frame; seconds per video.

Then, per model: **interpolation** — the true video at 1/``--factor`` of its frames, made
``--factor`` times denser by guides of each method (run/cascade.py), against cross-fade and the nearest input
frame: PSNR of the frames left out, seam at the input frames; and **loop** — the jump from the
last frame back to the first (over the median frame difference) with and without ``loop``,
next to the largest jump inside the video; and **refine** — the true video degraded (half size and
back, noise, flicker) refined at strengths 0.3 / 0.5 / 0.7 (``auto``'s mode; for the bundled,
progressive model both progressive and ``replacement_with_noise``, where held steps cost no call)
against the truth (PSNR, SSIM, flicker against the truth's), next to the degraded input itself.

    python bench/bench_guides.py [--frames 240] [--every 48] [--factor 4] [--seeds 0 1 2 3 4 5 6 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvid_core import load_svd, pipeline  # noqa: E402
from longvid_core.evaluation.synthetic import random_scene, render, shape_areas  # noqa: E402
from longvid_core.evaluation.video_metrics import drift, seam_score, shape_persistence, ssim  # noqa: E402
from longvid_core.run.frames import encode_frames  # noqa: E402

ONE_LEVEL_MODEL = Path(__file__).resolve().parent / "assets" / "longvid_small_one_level.safetensors"
MODELS = {"bundled": pipeline.BUNDLED_MODEL, "one-level": ONE_LEVEL_MODEL}
HELD_OUT = 7_000_000  # scene seeds from here on: the small models trained on 100,003..102,002
ROWS = ("no keyframes", "conditioning switch", "guides held", "guides held + switch", "guides clean",
        "guides time reversal", "cross-fade", "VAE round trip")
COLUMNS = ("psnr_keyframes", "ssim_keyframes", "psnr_between", "ssim_between", "seam_keyframes", "colour_drift",
           "persistence", "evals_per_frame", "seconds")
HEADER = ("PSNR at keys", "SSIM at keys", "PSNR between", "SSIM between", "seam at keys", "colour drift",
          "persistence", "evals/frame", "s/video")
LABEL = 44


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


def keyframe_positions(frames: int, every: int) -> list[int]:
    """Every ``every``-th frame after the first, and the last frame."""
    return sorted(set(range(every, frames, every)) | {frames - 1})


def measure(video: torch.Tensor, truth: torch.Tensor, keys: list[int], scene) -> dict[str, float]:
    between = [k for k in range(1, truth.shape[0]) if k not in keys]
    return {"psnr_keyframes": psnr(video[keys], truth[keys]), "ssim_keyframes": ssim(video[keys], truth[keys]),
            "psnr_between": psnr(video[between], truth[between]), "ssim_between": ssim(video[between], truth[between]),
            "seam_keyframes": seam_score(video, keys), "colour_drift": drift(video)["colour_drift"],
            "persistence": shape_persistence(video, [s.color for s in scene.shapes], shape_areas(scene))}


def cross_fade(pictures: torch.Tensor, keys: list[int], frames: int) -> torch.Tensor:
    """``pictures`` at frames ``[0] + keys``; each frame between two a linear mix of them."""
    anchors = [0, *keys]
    out = torch.empty((frames, *pictures.shape[1:]))
    for i, (a, b) in enumerate(zip(anchors, anchors[1:])):
        for k in range(a, b + 1):
            w = (k - a) / (b - a)
            out[k] = (1 - w) * pictures[i] + w * pictures[i + 1]
    return out


def bench_model(name: str, path: Path, frames: int, every: int, seeds: list[int]) -> dict[str, dict]:
    model = load_svd(path)
    defaults = pipeline.recommended_settings(path)
    size = defaults["width"]
    decode = dict(window=defaults["decode_window"], overlap=defaults["decode_overlap"])
    keys = keyframe_positions(frames, every)
    settings = pipeline.SamplingSettings(frames, "auto", defaults["window"], defaults["chunk"], defaults["steps"],
                                         defaults["cfg"], defaults["min_cfg"])
    results = {row: [] for row in ROWS}
    seconds = {row: 0.0 for row in ROWS}
    chosen = ""
    for seed in seeds:
        scene = random_scene(HELD_OUT + seed, size, size)
        truth = render(scene, frames)
        with torch.no_grad():
            round_trip = pipeline.decode_into(model, encode_frames(model.vae, truth), pipeline.ImageSink(**decode))[0]
        results["VAE round trip"].append(measure(round_trip, truth, keys, scene) | {"evals_per_frame": 0.0})
        started = time.perf_counter()
        results["cross-fade"].append(measure(cross_fade(round_trip[[0, *keys]], keys, frames), truth, keys, scene)
                                     | {"evals_per_frame": 0.0})
        seconds["cross-fade"] += time.perf_counter() - started
        first, _ = pipeline.condition_images(model, truth[:1], size, size, fps=defaults["fps"],
                                             motion_bucket_id=defaults["motion_bucket_id"],
                                             noise_aug_strength=defaults["noise_aug_strength"], seed=seed)
        switch, _ = pipeline.condition_images(model, truth[[0, *keys[:-1]]], size, size, [0, *keys[:-1]],
                                              fps=defaults["fps"], motion_bucket_id=defaults["motion_bucket_id"],
                                              noise_aug_strength=defaults["noise_aug_strength"], seed=seed)
        by_method = {method: pipeline.guides_from_images(model, truth[keys], keys, [1.0] * len(keys), size, size,
                                                         method=method, anchors_like=first[0][1], seed=seed)[0]
                     for method in ("hold", "clean", "time_reversal")}
        for row, cond, row_guides in (("no keyframes", first, []), ("conditioning switch", switch, []),
                                      ("guides held", first, by_method["hold"]),
                                      ("guides held + switch", switch, by_method["hold"]),
                                      ("guides clean", first, by_method["clean"]),
                                      ("guides time reversal", first, by_method["time_reversal"])):
            started = time.perf_counter()
            run = pipeline.prepare_run(model, cond, pipeline.SamplingSettings(**{**vars(settings), "seed": seed}),
                                       guides=row_guides)
            chosen = run.settings.describe()
            video = run.into(pipeline.ImageSink(**decode))[0]
            seconds[row] += time.perf_counter() - started
            results[row].append(measure(video, truth, keys, scene) | {"evals_per_frame": run.plan.evaluations_per_frame})
    print(f"# {name}: {chosen}; {len(seeds)} scenes x {frames} frames, keyframes at {keys}", flush=True)
    means = {}
    for row in ROWS:
        means[row] = {k: statistics.mean(m[k] for m in results[row]) for k in results[row][0]}
        means[row]["seconds"] = seconds[row] / len(seeds)
        print_row(f"{name}: {row}", means[row])
    return means


def decoded(model, defaults, cond, settings, guides=(), loop_latent=None):
    decode = dict(window=defaults["decode_window"], overlap=defaults["decode_overlap"])
    run = pipeline.prepare_run(model, cond, settings, guides=guides, loop_latent=loop_latent)
    return run.into(pipeline.ImageSink(**decode))[0], run


def bench_interpolation_and_loop(name: str, path: Path, frames: int, factor: int, seeds: list[int]) -> None:
    from longvid_core.evaluation.video_metrics import frame_differences
    from longvid_core.run import cascade

    cost = {}  # row -> (evals per frame, seconds summed over scenes)

    def timed(row, *args, **kwargs):
        started = time.perf_counter()
        video, run = decoded(*args, **kwargs)
        cost[row] = (run.plan.evaluations_per_frame, cost.get(row, (0, 0.0))[1] + time.perf_counter() - started)
        return video

    model = load_svd(path)
    defaults = pipeline.recommended_settings(path)
    size = defaults["width"]
    decode = dict(window=defaults["decode_window"], overlap=defaults["decode_overlap"])
    inputs = (frames - 1) // factor + 1
    out = cascade.interpolated_frames(inputs, factor)
    kept = list(range(factor, out, factor))
    left_out = [k for k in range(out) if k % factor]
    methods = ("hold", "clean", "time_reversal")
    rows = {**{f"guides {method} x{factor}": [] for method in methods}, f"cross-fade x{factor}": [],
            f"nearest frame x{factor}": []}
    loops = {"loop": [], "no loop": []}
    for seed in seeds:
        truth = render(random_scene(HELD_OUT + seed, size, size), out)
        cond, _ = pipeline.condition_images(model, truth[:1], size, size, fps=defaults["fps"],
                                            motion_bucket_id=defaults["motion_bucket_id"],
                                            noise_aug_strength=defaults["noise_aug_strength"], seed=seed)
        settings = pipeline.SamplingSettings(out, "auto", defaults["window"], defaults["chunk"], defaults["steps"],
                                             defaults["cfg"], defaults["min_cfg"], seed=seed)
        made = {method: timed(f"guides {method} x{factor}", model, defaults, cond, settings,
                              cascade.interpolation_guides(model, truth[::factor], factor, size, size, method,
                                                           cond[0][1])[0]) for method in methods}
        with torch.no_grad():
            trip = pipeline.decode_into(model, encode_frames(model.vae, truth[::factor]),
                                        pipeline.ImageSink(**decode))[0]
        nearest = trip[[min(round(k / factor), inputs - 1) for k in range(out)]]
        videos = {**{f"guides {m} x{factor}": made[m] for m in methods},
                  f"cross-fade x{factor}": cross_fade(trip, kept, out), f"nearest frame x{factor}": nearest}
        for row, video in videos.items():
            rows[row].append({"psnr_between": psnr(video[left_out], truth[left_out]),
                              "ssim_between": ssim(video[left_out], truth[left_out]),
                              "seam_keyframes": seam_score(video, kept)})
        first, _ = pipeline.guides_from_images(model, truth[:1], [0], [1.0], size, size)
        for row, loop_latent in (("loop", first[0].latent), ("no loop", None)):
            video = timed(row, model, defaults, cond, settings, loop_latent=loop_latent)
            diffs = frame_differences(video)
            median = diffs.median().clamp_min(1e-8)
            wrap = (video[-1].double() - video[0].double()).abs().mean()
            loops[row].append({"wrap": float(wrap / median), "inside": float(diffs.max() / median)})
    print(f"# {name}: interpolation x{factor} of {inputs} true frames -> {out}; loops of {out} frames", flush=True)
    for row, measured in rows.items():
        mean = {k: statistics.mean(m[k] for m in measured) for k in measured[0]}
        print(f"{name + ': ' + row:<{LABEL}}  PSNR left out {mean['psnr_between']:6.2f}  "
              f"SSIM left out {mean['ssim_between']:5.3f}  seam at inputs {mean['seam_keyframes']:5.2f}"
              f"{cost_cells(cost.get(row), len(seeds))}", flush=True)
    for row, measured in loops.items():
        mean = {k: statistics.mean(m[k] for m in measured) for k in measured[0]}
        print(f"{name + ': ' + row:<{LABEL}}  jump last -> first {mean['wrap']:5.2f}  "
              f"largest jump inside {mean['inside']:5.2f}{cost_cells(cost.get(row), len(seeds))}", flush=True)


def cost_cells(cost, scenes: int) -> str:
    """``(evals per frame, seconds over all scenes)`` as the table's two cost cells; none for baselines."""
    return "" if cost is None else f"  evals/frame {cost[0]:6.2f}  s/video {cost[1] / scenes:6.1f}"


def degrade(truth: torch.Tensor, seed: int) -> torch.Tensor:
    """The true video made worse as refine's input: half the resolution and back up (bilinear),
    per-frame noise (0.03) and per-frame brightness flicker (up to +-0.04)."""
    generator = torch.Generator().manual_seed(seed)
    pictures = truth.permute(0, 3, 1, 2)
    small = torch.nn.functional.avg_pool2d(pictures, 2)
    blurred = torch.nn.functional.interpolate(small, size=pictures.shape[-2:], mode="bilinear", align_corners=False)
    noise = 0.03 * torch.randn(blurred.shape, generator=generator)
    jumps = 0.08 * (torch.rand(blurred.shape[0], 1, 1, 1, generator=generator) - 0.5)
    return (blurred + noise + jumps).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def bench_refine(name: str, path: Path, frames: int, seeds: list[int], strengths=(0.3, 0.5, 0.7)) -> None:
    from longvid_core.evaluation.video_metrics import flicker
    from longvid_core.run import cascade

    model = load_svd(path)
    defaults = pipeline.recommended_settings(path)
    size = defaults["width"]
    # progressive weights: both ways (auto refines them one level per call, as measured here)
    modes = ["progressive", "replacement_with_noise"] if name == "bundled" else ["auto"]
    rows: dict[str, list] = {"degraded input (baseline)": []}
    seconds: dict[str, float] = {}
    evals: dict[str, float] = {}
    for seed in seeds:
        truth = render(random_scene(HELD_OUT + seed, size, size), frames)
        degraded = degrade(truth, seed)
        rows["degraded input (baseline)"].append((psnr(degraded, truth), ssim(degraded, truth), flicker(degraded, truth)))
        cond, _ = pipeline.condition_images(model, degraded[:1], size, size, fps=defaults["fps"],
                                            motion_bucket_id=defaults["motion_bucket_id"],
                                            noise_aug_strength=defaults["noise_aug_strength"], seed=seed)
        for mode in modes:
            settings = pipeline.SamplingSettings(frames, mode, defaults["window"], defaults["chunk"], defaults["steps"],
                                                 defaults["cfg"], defaults["min_cfg"], seed=seed)
            for strength in strengths:
                guides, _ = cascade.refine_guides(model, degraded, strength, size, size)
                started = time.perf_counter()
                video, run = decoded(model, defaults, cond, settings, guides)
                row = f"refine {strength} ({run.settings.mode})"
                seconds[row] = seconds.get(row, 0.0) + time.perf_counter() - started
                evals[row] = run.plan.evaluations_per_frame
                rows.setdefault(row, []).append((psnr(video, truth), ssim(video, truth), flicker(video, truth)))
    print(f"# {name}: refine of {frames} degraded true frames (half size and back, noise 0.03, flicker +-0.04); "
          f"against the truth; flicker 1 = as steady as the truth", flush=True)
    for row, measured in rows.items():
        p, q, f = (statistics.mean(m[i] for m in measured) for i in range(3))
        cost = (f"  evals/frame {evals[row]:6.2f}  s/video {seconds[row] / len(seeds):6.1f}" if row in evals else "")
        print(f"{name + ': ' + row:<{LABEL}}  PSNR {p:6.2f}  SSIM {q:5.3f}  flicker {f:5.2f}{cost}", flush=True)


def print_row(label: str, row: dict) -> None:
    cells = [f"{row.get(c, float('nan')):>{len(h) + 2}.{3 if c == 'colour_drift' else 2}f}"
             for c, h in zip(COLUMNS, HEADER)]
    print(f"{label:<{LABEL}}" + "".join(cells), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=240)
    parser.add_argument("--every", type=int, default=48, help="a keyframe every this many frames")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    parser.add_argument("--factor", type=int, default=4, help="interpolation factor")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(f"{'':<{LABEL}}" + "".join(f"{h:>{len(h) + 2}}" for h in HEADER))
    for name in args.models:
        bench_model(name, MODELS[name], args.frames, args.every, args.seeds)
    for name in args.models:
        bench_interpolation_and_loop(name, MODELS[name], args.frames, args.factor, args.seeds)
    for name in args.models:
        bench_refine(name, MODELS[name], args.frames, args.seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
