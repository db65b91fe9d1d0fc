"""training/memory/: the memory measurement at the tiny config, the fit, the prediction, and
train.py --estimate-memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from training import memory

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The script itself at the tiny config, its coefficients written to a file."""
    out = tmp_path_factory.mktemp("memory") / "coefficients.json"
    assert memory.main(["--out", str(out)]) == 0
    return json.loads(out.read_text())


def steps_of(coeffs, mode):
    return [s for s in coeffs["steps"] if s["mode"] == mode]


def test_peak_live_bytes_counts_a_known_allocation_exactly():
    def make():
        return torch.ones(1024, 1024)  # 4 MiB, live when the function returns

    def transient():
        torch.ones(256, 1024).sum()  # 1 MiB, freed at once
        return None

    peaks, kept = memory.peak_live_bytes(make)
    assert peaks["all"][0] == 4 * 2**20 and kept.shape == (1024, 1024)
    assert memory.peak_live_bytes(transient)[0]["all"][0] >= 2**20


def test_weights_bytes_are_parameter_counts_times_dtype_sizes(tiny_run):
    from longvid_core.networks import exvideo

    plan = memory.tiny_plan()
    unet, trainable = memory.build_unet(plan.config, "exvideo", plan.exvideo_frames, "bf16")
    trained = exvideo.extension_parameters(unet)
    frozen = sum(p.numel() for n, p in unet.named_parameters() if n not in trained)
    expected = 4 * sum(p.numel() for p in trained.values()) + 2 * frozen
    for step in steps_of(tiny_run, "exvideo"):
        assert step["weights_bytes"] == expected
        assert step["trainable"] == sum(p.numel() for p in trainable.values())


def test_trainable_counts_per_mode(tiny_run):
    from longvid_core.networks import exvideo

    plan = memory.tiny_plan()
    ext, _ = memory.build_unet(plan.config, "exvideo", plan.exvideo_frames)
    lora, lora_trained = memory.build_unet(plan.config, "lora", plan.exvideo_frames)
    full, _ = memory.build_unet(plan.config, "full", plan.exvideo_frames)
    expected = {
        "exvideo": sum(p.numel() for p in exvideo.extension_parameters(ext).values()),
        "exvideo,progressive": sum(p.numel() for p in exvideo.extension_parameters(ext).values()),
        "lora,progressive": memory.lora_parameter_count(lora, memory.LORA_RANK),
        "full": sum(p.numel() for p in full.parameters()),
    }
    for mode, count in expected.items():
        assert {s["trainable"] for s in steps_of(tiny_run, mode)} == {count}, mode
    # rank x (in + out) on every to_q/to_k/to_v/to_out.0, whichever LoRA implementation ran
    assert sum(p.numel() for p in lora_trained.values()) == expected["lora,progressive"]
    counts = tiny_run["counts"]
    assert counts["exvideo_trained_without_table"] + counts["exvideo_table_per_frame"] * plan.exvideo_frames \
        == expected["exvideo"]
    assert counts["unet_base"] == expected["full"]


def test_gradient_and_optimizer_bytes_are_fp32_sizes(tiny_run):
    for step in tiny_run["steps"]:
        assert step["grads_measured_bytes"] == 4 * step["grads_measured_params"]
        assert step["grads_counted_bytes"] == 4 * (step["trainable"] - step["grads_measured_params"])
        # AdamW: two fp32 moments per parameter plus one fp32 step counter per tensor
        per_param = step["optimizer_measured_bytes"] / step["optimizer_measured_params"]
        assert 8.0 <= per_param < 8.1


def test_fit_reproduces_the_measured_points(tiny_run):
    for key, entry in tiny_run["activations"].items():
        for phase, fit in entry.items():
            largest = max(abs(y) for _, y in fit["points"])
            for size, measured in fit["points"]:
                predicted = memory.activation_term(fit, memory.Size(**size))
                assert abs(predicted - measured) <= 0.02 * largest + 1024, (key, phase)


def test_fit_recovers_known_coefficients():
    sizes = [memory.Size(16, 16, 4), memory.Size(16, 16, 8), memory.Size(32, 32, 4)]
    values = [1000 + 300 * s.units + 50 * s.height * s.width for s in sizes]
    fit = memory.fit_activations(sizes, values)
    assert fit["a"] == pytest.approx(1000, abs=1e-3) and fit["b"] == pytest.approx(300)
    assert fit["c"] == pytest.approx(50)
    line = memory.fit_activations(sizes[::2], values[::2])  # two sizes: a line in units
    assert line["c"] == 0.0 and line["max_residual"] < 1e-6


def test_checkpointing_saves_activations_at_every_measured_size(tiny_run):
    for parameter_set in ("exvideo", "lora", "full"):
        on = tiny_run["activations"][f"{parameter_set}/ckpt"]["backward"]["points"]
        off = tiny_run["activations"][f"{parameter_set}/no-ckpt"]["backward"]["points"]
        largest_on = max(on, key=lambda p: memory.Size(**p[0]).units)
        largest_off = max(off, key=lambda p: memory.Size(**p[0]).units)
        assert largest_on[0] == largest_off[0]
        assert largest_on[1] < largest_off[1], parameter_set


def test_prediction_grows_with_size_and_shrinks_with_options():
    coeffs = memory.load_coefficients()  # the stored full-size measurement
    base = memory.Setting(mode="exvideo", height=512, width=512, frames=25)

    def total(**kw):
        return memory.predict(coeffs, replace(base, **kw)).total

    assert total(frames=64) > total(frames=25)
    assert total(height=1024, width=576) > total()
    assert total(batch=2) > total()
    assert total(checkpointing=False) > total()
    assert total(eight_bit=True) < total()
    assert total(zero_stage=2, gpus=8) < total(zero_stage=2, gpus=2) < total()
    assert total(zero_stage=2, gpus=2, offload=True) < total(zero_stage=2, gpus=2)
    assert total(precision="fp32") > total()
    assert total(ema=True) > total()
    for mode in ("lora,progressive", "full"):
        assert memory.predict(coeffs, replace(base, mode=mode)).total > 0
    assert memory.predict(coeffs, replace(base, mode="full")).total > total()


def test_prediction_says_what_is_measured_and_what_computed():
    coeffs = memory.load_coefficients()
    text = memory.format_prediction(memory.predict(coeffs, memory.Setting()))
    body = [line for line in text.splitlines()[1:-1]]
    assert body and all(("[computed" in line) or ("[fitted to measurements" in line) for line in body)
    with pytest.raises(ValueError, match="ZeRO stage must be 0 or 2; found 3"):
        memory.predict(coeffs, memory.Setting(zero_stage=3))


def test_stored_measurement_is_the_full_size_run():
    coeffs = memory.load_coefficients()
    assert coeffs["plan"] == "full-size SVD-XT"
    assert coeffs["layout_tensors_checked"] == 1428
    assert coeffs["counts"]["unet_base"] == 1_524_623_082


def test_estimate_memory_prints_and_exits_without_training(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(REPO / "training" / "train.py"), "--estimate-memory", "--mode", "exvideo",
         "--frames", "64", "--height", "512", "--width", "512", "--output-dir", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "memory estimate: mode exvideo, 512x512 x 64 frames" in result.stdout
    assert "peak per GPU" in result.stdout and "ZeRO-2 over 8 GPU(s)" in result.stdout
    assert not out.exists()  # nothing trained, nothing written
    assert "LongVid trainer" not in result.stdout + result.stderr


def test_lora_without_peft_trains_the_same_tensors(monkeypatch):
    plan = memory.tiny_plan()
    with_peft_or_not, trained = memory.build_unet(plan.config, "lora", plan.exvideo_frames)
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now fails: the minimal adapter is used
    minimal, minimal_trained = memory.build_unet(plan.config, "lora", plan.exvideo_frames)
    assert memory.lora_backend(minimal) == "minimal"
    shapes = sorted(tuple(p.shape) for p in minimal_trained.values())
    assert shapes == sorted(tuple(p.shape) for p in trained.values())
    assert sum(p.numel() for p in minimal_trained.values()) == memory.lora_parameter_count(minimal, memory.LORA_RANK)
    step = memory.measure_step(minimal, minimal_trained, "lora", memory.Size(4, 4, 2), True, "bf16",
                               plan.kept_prefix, plan.config)
    assert step.grads_measured_bytes == 4 * step.trainable  # every adapter weight got its fp32 gradient


def test_docs_table_is_the_stored_measurements_table():
    docs = (REPO / "docs" / "training.md").read_text()
    for row in memory.fit_table(memory.load_coefficients()):
        assert row in docs
