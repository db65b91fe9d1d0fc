"""``--optimizer adamw8bit``: bitsandbytes' AdamW with 8-bit states (``training/optimizers.py``), on
its own and in the trainer (tiny model, CPU): it steps, its states are 8-bit, and a resume from its
checkpoint continues exactly."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from longvid_core.weights.checkpoint_io import open_tensors
from tests.tiny import write_training_data
from training import train
from training.checkpointing import CHECKPOINTS, OPTIMIZER_FILE, STATE
from training.config import TrainConfig, parse_config
from training.optimizers import MIN_8BIT_SIZE, make_optimizer, state_bytes
from training.smoke import smoke_args


def config_for(optimizer: str) -> TrainConfig:
    return TrainConfig(base="b", output_dir="o", data_dir="d", optimizer=optimizer, learning_rate=1e-2,
                       weight_decay=0.0)


def fit_a_line(optimizer_name: str, steps: int = 30):
    """A 64x128 linear map (8192 weights: 8-bit states) plus its bias (128: float32 states)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(128, 64)
    target = torch.nn.Linear(128, 64)
    x = torch.randn(256, 128)
    optimizer = make_optimizer(config_for(optimizer_name), model.parameters())
    losses = []
    for _ in range(steps):
        loss = (model(x) - target(x).detach()).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return model, optimizer, losses


def test_8bit_adamw_steps_on_cpu_with_8bit_states():
    model, optimizer, losses = fit_a_line("adamw8bit")
    assert type(optimizer).__name__ == "AdamW8bit"
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.5 * losses[0], losses
    weight_state, bias_state = optimizer.state[model.weight], optimizer.state[model.bias]
    assert model.weight.numel() >= MIN_8BIT_SIZE > model.bias.numel()
    assert weight_state["state1"].dtype == weight_state["state2"].dtype == torch.uint8
    assert weight_state["state1"].shape == model.weight.shape
    assert bias_state["state1"].dtype == torch.float32  # too small to quantise
    # 2 bytes of moments per weight, against 8 for float32 AdamW
    _, reference, reference_losses = fit_a_line("adamw")
    weights = model.weight.numel() + model.bias.numel()
    assert state_bytes(reference) == {"float32": 8 * weights + 4 * 2}  # two moments, and a step per tensor
    eight_bit = state_bytes(optimizer)
    assert eight_bit["uint8"] == 2 * model.weight.numel()
    assert eight_bit["uint8"] + eight_bit["float32"] < 0.4 * state_bytes(reference)["float32"], eight_bit
    # and it follows float32 AdamW closely on this problem
    assert abs(losses[-1] - reference_losses[-1]) < 0.1 * reference_losses[-1]


def test_a_missing_bitsandbytes_is_named_with_its_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "bitsandbytes" else real(name, *args))
    expected = r"^--optimizer adamw8bit needs bitsandbytes: pip install \"bitsandbytes>=[0-9.]+,<[0-9.]+\""
    with pytest.raises(ValueError, match=expected):
        parse_config(["--base", "b", "--output-dir", "o", "--data-dir", "d", "--optimizer", "adamw8bit"])
    with pytest.raises(ValueError, match=expected):
        make_optimizer(config_for("adamw8bit"), [torch.nn.Parameter(torch.zeros(2))])
    assert type(make_optimizer(config_for("adamw"), [torch.nn.Parameter(torch.zeros(2))])) is torch.optim.AdamW


# ---------------------------------------------------------------------------------------------
# In the trainer: 4 steps, then a resume from step 2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_training_data(tmp_path_factory.mktemp("adamw8bit"))


def run(dataset, output: Path, *extra: str) -> list[dict]:
    _, base, videos = dataset
    code = train.main(smoke_args(base, videos, output, "--no-gradient-checkpointing", "--optimizer", "adamw8bit",
                                 "--learning-rate", "2e-3", "--max-steps", "4", "--save-every", "2", *extra))
    assert code == 0
    return [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]


def test_trainer_with_8bit_states_learns_and_resumes_exactly(dataset):
    root = dataset[0]
    straight = run(dataset, root / "straight", "--eval-every", "4")
    losses = [r["loss"] for r in straight if "loss" in r]
    evals = [r["eval_loss"] for r in straight if "eval_loss" in r]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    assert evals[1] < 0.8 * evals[0], evals  # the fixed held-out batch's loss falls

    # the checkpoint holds 8-bit moments for (nearly) every trained weight
    saved = torch.load(root / "straight" / CHECKPOINTS / "step-00000002" / STATE / OPTIMIZER_FILE,
                       map_location="cpu", weights_only=True)["optimizer"]
    bytes_by_dtype: dict = {}
    for state in saved["state"].values():
        quantised = state["__bnb_optimizer_quant_state__"]
        for key in ("state1", "state2"):
            dtype = str(quantised[key].dtype)
            bytes_by_dtype[dtype] = bytes_by_dtype.get(dtype, 0) + quantised[key].numel()
    trained = sum(t.numel() for t in open_tensors(root / "straight" / CHECKPOINTS / "step-00000002" /
                                                  "extension.safetensors").values())
    assert bytes_by_dtype["torch.uint8"] > 0.95 * 2 * trained, bytes_by_dtype

    resumed = run(dataset, root / "resumed", "--resume", str(root / "straight" / CHECKPOINTS / "step-00000002"))
    assert [r["loss"] for r in resumed if "loss" in r] == losses[2:]
    for name in ("extension.safetensors", "extension_ema.safetensors"):
        a = open_tensors(root / "straight" / CHECKPOINTS / "step-00000004" / name)
        b = open_tensors(root / "resumed" / CHECKPOINTS / "step-00000004" / name)
        assert max((a[k] - b[k]).abs().max().item() for k in a.keys()) <= 1e-6, name


def test_the_install_hint_is_the_pin_of_the_extras():
    import tomllib

    from training.optimizers import BITSANDBYTES

    extras = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    assert BITSANDBYTES in extras["training"] and BITSANDBYTES in extras["test"]
