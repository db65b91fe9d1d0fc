"""The benchmark scripts under ``bench/`` at a small size: they run to completion and print what
the README's tables are made of (their numbers belong to the README, not to tests)."""

import importlib.util
import math
import re
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_quality_prints_every_row_and_column(capsys):
    bench = _load("bench_quality")
    # the bundled model stands in for both models here: this checks the table, not the numbers
    assert bench.main(["--frames", "12", "--seeds", "3", "--settings", "progressive", "context_windows",
                       "--one-level-model", str(bench.BUNDLED_MODEL)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["model:", "setting", "colour", "drift", "contrast", "drift", "seam", "persistence",
                                "form", "speed", "jitter", "latent", "z", "evals/frame", "s/video"]
    rows = {line[:bench.LABEL].strip(): [float(v) for v in line[bench.LABEL:].split()] for line in lines[2:8]}
    assert list(rows) == [bench.GROUND_TRUTH, bench.VAE_ROUND_TRIP, "one-level: progressive",
                          "one-level: context_windows", "progressive: progressive", "progressive: context_windows"]
    # scene 3 is one square: the true frames keep it whole, in its form, moving
    truth = dict(zip(bench.COLUMNS, rows[bench.GROUND_TRUTH]))
    assert truth["persistence"] == 1.0 and truth["form"] == 1.0 and truth["speed"] > 0.3
    assert all(len(values) == len(bench.COLUMNS) for values in rows.values())
    sampled = dict(zip(bench.COLUMNS, rows["one-level: context_windows"]))
    assert not any(math.isnan(v) for v in sampled.values()) and sampled["evals_per_frame"] > 0
    assert lines[-1].startswith("ratio progressive: context_windows / progressive: colour drift ")
    assert "latent z" in lines[-1] and "evals per frame" in lines[-1]


def test_bench_quality_latent_z_is_small_for_the_reference_and_large_for_a_shift():
    bench = _load("bench_quality")
    reference = bench.latent_stats(torch.randn(1, 200, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
    same = bench.latent_stats(torch.randn(1, 40, 4, 8, 8, generator=torch.Generator().manual_seed(1)))
    shifted = bench.latent_stats(torch.randn(1, 40, 4, 8, 8, generator=torch.Generator().manual_seed(1)) + 1.0)
    assert bench.latent_z(same, reference) < 2 < bench.latent_z(shifted, reference)


def test_bench_quality_rows_are_every_setting_auto_may_pick():
    from longvid_core import pipeline

    bench = _load("bench_quality")
    assert set(pipeline.TRAINING_FREE_OPTIONS) <= set(bench.SETTINGS)
    assert pipeline.TRAINING_FREE in bench.SETTINGS


def test_bench_gpu_runs_every_measurement_at_a_tiny_size_on_the_cpu(capsys):
    bench_gpu = _load("bench_gpu")
    assert bench_gpu.main(["--tiny", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for what in ("float32, SDPA", "bfloat16, SDPA", "deep-cache call", "xformers", "torch.compile",
                 "ExVideo 32x32 x 8 frames", "streaming decode"):
        assert what in out, what
    ratios = [float(r) for r in re.findall(r"ratio (?:to \w+ )?(\d+\.\d+)", out)]
    assert ratios and all(math.isfinite(r) and r > 0 for r in ratios)


def test_bench_gpu_says_how_to_run_without_a_gpu(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _load("bench_gpu").main([]) == 2
    assert "no CUDA GPU here" in capsys.readouterr().err


def test_bench_speed_prints_every_row_and_ratio(capsys):
    bench_speed = _load("bench_speed")
    assert bench_speed.main(["--frames", "8", "--seeds", "0", "--no-compile"]) == 0
    out = capsys.readouterr().out
    for model in ("one-level", "progressive"):
        for row in ("cache off", "cache interval 1", "cache interval 2"):
            assert f"{model}: {row}" in out
        assert f"ratio {model}: cache interval 1 / off: seconds" in out
    shares = [float(s) for s in re.findall(r"a reused call runs (\d\.\d+) of a full call", out)]
    assert len(shares) == 2 and all(0 < s < 1 for s in shares)


def test_bench_guides_prints_every_row_and_the_guides_reach_their_keyframes(capsys):
    bench = _load("bench_guides")
    assert bench.main(["--frames", "20", "--every", "8", "--seeds", "0", "--models", "bundled"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["PSNR", "at", "keys", "SSIM", "at", "keys", "PSNR", "between", "SSIM", "between",
                                "seam", "at", "keys", "colour", "drift", "persistence", "evals/frame", "s/video"]
    assert lines[1].startswith("# bundled: progressive") and "keyframes at [8, 16, 19]" in lines[1]
    rows = {line[:bench.LABEL].strip(): dict(zip(bench.COLUMNS, map(float, line[bench.LABEL:].split())))
            for line in lines[2:2 + len(bench.ROWS)]}
    assert list(rows) == [f"bundled: {row}" for row in bench.ROWS]
    # the guided latents are exact (tests/test_guides.py); decoded, the keyframes come closer to the truth
    guided = rows["bundled: guides held"]
    assert guided["psnr_keyframes"] > rows["bundled: no keyframes"]["psnr_keyframes"]
    assert guided["evals_per_frame"] == rows["bundled: no keyframes"]["evals_per_frame"] > 0
    assert rows["bundled: VAE round trip"]["ssim_keyframes"] > 0.5 and 0 < guided["persistence"] <= 1
    # progressive holds time-reversal anchors only: no extra call there; clean guides cost no call either
    assert rows["bundled: guides time reversal"]["evals_per_frame"] == guided["evals_per_frame"]
    assert rows["bundled: guides clean"]["evals_per_frame"] == guided["evals_per_frame"]
    # interpolation x4 of the true frames and loops: every row printed, numbers measured
    rest = lines[2 + len(bench.ROWS):]
    assert rest[0] == "# bundled: interpolation x4 of 5 true frames -> 17; loops of 17 frames"
    assert [line[:bench.LABEL].strip() for line in rest[1:8]] == [
        "bundled: guides hold x4", "bundled: guides clean x4", "bundled: guides time_reversal x4",
        "bundled: cross-fade x4", "bundled: nearest frame x4", "bundled: loop", "bundled: no loop"]
    # the model's rows carry their cost, the baselines none
    assert ["evals/frame" in line for line in rest[1:8]] == [True, True, True, False, False, True, True]
    assert all("SSIM left out" in line for line in rest[1:6])
    # refine: the degraded input, then three strengths in auto's mode and in replacement with noise
    assert rest[8].startswith("# bundled: refine of 20 degraded true frames")
    refine = {line[:bench.LABEL].strip(): line[bench.LABEL:] for line in rest[9:]}
    assert list(refine) == ["bundled: degraded input (baseline)"] + [
        f"bundled: refine {s} ({mode})" for mode in ("progressive", "replacement_with_noise") for s in (0.3, 0.5, 0.7)]
    cost = [float(re.search(r"evals/frame +(\d+\.\d+)", refine[f"bundled: refine {s} (replacement_with_noise)"])[1])
            for s in (0.3, 0.5, 0.7)]
    assert cost[0] > cost[1] > cost[2] > 0  # held steps cost no call
    assert all(not math.isnan(float(v)) for line in rest for v in re.findall(r"-?\d+\.\d+", line))


def test_bench_samplers_spread_leaves_out_what_was_not_measured():
    bench = _load("bench_samplers")
    assert bench.spread_of_measured([float("nan"), 1.0, 3.0]) == 1.0
    assert bench.spread_of_measured([float("nan"), 2.0]) == 0.0 == bench.spread_of_measured([])


def test_bench_samplers_prints_every_row_and_the_matching_summary(capsys):
    bench = _load("bench_samplers")
    assert bench.main(["--models", "bundled", "--seeds", "0", "1", "--frames", "12", "--samplers", "euler",
                       "dpmpp_2m", "--schedulers", "karras", "--steps", "4", "6"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("# bundled: auto -> progressive")
    labels = [line[:bench.LABEL].strip() for line in lines[2:7]]
    assert labels == ["bundled: euler + karras, 24 steps", "bundled: euler + karras, 4 steps",
                      "bundled: euler + karras, 6 steps", "bundled: dpmpp_2m + karras, 4 steps",
                      "bundled: dpmpp_2m + karras, 6 steps"]
    assert "skipped: steps" in lines[4] and "skipped: steps" in lines[6]  # 6 is no multiple of window / chunk
    assert lines[7].startswith("# bundled: fewest evaluations per frame matching euler + karras, 24 steps")
    assert lines[8].startswith("bundled: euler ") and lines[9].startswith("bundled: dpmpp_2m ")
    assert lines[8].endswith("x the reference")  # euler matches itself at 24 steps at the latest
