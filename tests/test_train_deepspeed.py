"""DeepSpeed ZeRO-2 in the trainer: the accelerate options and batch sizes it is given
(``training/distributed.py``), and two real CPU processes over gloo launched with the documented
accelerate config, checkpointed and resumed under the optimizer-offload config.

The first DeepSpeed launch on a machine JIT-builds a small shared-memory op with g++ (cached in
``~/.cache/torch_extensions``): about a minute once, then each launch takes 15-40 s here.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from longvid_core.weights.checkpoint_io import open_tensors
from tests.tiny import write_training_data
from training import checkpointing
from training.checkpointing import CHECKPOINTS, DEEPSPEED_DIR, STATE
from training.distributed import (CPU_BACKEND, accelerator_options, check_process_group, deepspeed_requested,
                                  fill_deepspeed_config)
from training.smoke import smoke_args

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "training" / "train.py"
ZERO2 = "training/accelerate_deepspeed_zero2.yaml"
ZERO2_OFFLOAD = "training/accelerate_deepspeed_zero2_offload.yaml"

# ---------------------------------------------------------------------------------------------
# What the trainer asks of accelerate


def test_batch_sizes_follow_the_process_count():
    documented = json.loads((ROOT / "training" / "deepspeed_zero2.json").read_text())
    for processes in (1, 2, 8, 64):
        filled = fill_deepspeed_config(documented, batch_size=2, grad_accum=3, max_grad_norm=0.5,
                                       num_processes=processes)
        assert filled["train_batch_size"] == 2 * 3 * processes
        assert (filled["train_micro_batch_size_per_gpu"], filled["gradient_accumulation_steps"]) == (2, 3)
        assert filled["gradient_clipping"] == 0.5
    assert documented["train_batch_size"] == "auto"  # the loaded config itself is left alone


def test_fixed_deepspeed_values_must_agree_with_the_trainer():
    agreeing = {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
                "gradient_clipping": 2.0}
    filled = fill_deepspeed_config(agreeing, batch_size=2, grad_accum=1, max_grad_norm=1.0, num_processes=8)
    assert filled["train_batch_size"] == 16 and filled["gradient_clipping"] == 2.0
    with pytest.raises(ValueError, match=r"train_micro_batch_size_per_gpu = 4 but the trainer feeds --batch-size 2"):
        fill_deepspeed_config({"train_micro_batch_size_per_gpu": 4}, 2, 1, 1.0, 2)
    with pytest.raises(ValueError, match=r"train_batch_size = 16 but 2 per process x 1 accumulation x 2 processes = 4"):
        fill_deepspeed_config({"train_batch_size": 16}, 2, 1, 1.0, 2)


def test_deepspeed_with_cpu_is_honoured_without_a_gpu_and_refused_with_one():
    assert accelerator_options(cpu=True, deepspeed=False, cuda_available=True) == {"cpu": True, "backend": None}
    assert accelerator_options(cpu=True, deepspeed=True, cuda_available=False) == {"cpu": False,
                                                                                    "backend": CPU_BACKEND}
    assert accelerator_options(cpu=False, deepspeed=True, cuda_available=True) == {"cpu": False, "backend": None}
    with pytest.raises(ValueError, match=r"^--cpu with a DeepSpeed accelerate config: .*CUDA_VISIBLE_DEVICES="):
        accelerator_options(cpu=True, deepspeed=True, cuda_available=True)


def test_a_launch_whose_processes_did_not_join_is_refused():
    assert deepspeed_requested({"ACCELERATE_USE_DEEPSPEED": "true"})
    assert not deepspeed_requested({})
    check_process_group(2, {"WORLD_SIZE": "2"})
    check_process_group(1, {})
    with pytest.raises(ValueError, match="launched 2 processes .* accelerate sees 1"):
        check_process_group(1, {"WORLD_SIZE": "2"})


def test_the_offload_config_is_the_documented_one_plus_offload():
    plain_yaml, offload_yaml = (yaml.safe_load((ROOT / name).read_text()) for name in (ZERO2, ZERO2_OFFLOAD))
    plain, offload = (json.loads((ROOT / y["deepspeed_config"]["deepspeed_config_file"]).read_text())
                      for y in (plain_yaml, offload_yaml))
    assert offload["zero_optimization"].pop("offload_optimizer") == {"device": "cpu", "pin_memory": True}
    # the trainer's own (torch or bitsandbytes) optimizer runs on the offloaded partition
    assert offload.pop("zero_force_ds_cpu_optimizer") is False
    assert offload == plain
    assert {k: v for k, v in offload_yaml.items() if k != "deepspeed_config"} == \
        {k: v for k, v in plain_yaml.items() if k != "deepspeed_config"}


# ---------------------------------------------------------------------------------------------
# Two CPU processes under DeepSpeed ZeRO-2


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_training_data(tmp_path_factory.mktemp("deepspeed"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(accelerate_config: str, dataset, output: Path, *extra: str) -> str:
    """``accelerate launch --config_file <config> --num_processes 2 training/train.py ... --cpu`` from
    the repository root (the YAML names its JSON relative to it), as docs/training.md writes it."""
    root, base, videos = dataset
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config,
               "--num_processes", "2", "--main_process_port", str(_free_port()), str(TRAIN),
               *smoke_args(base, videos, output, "--no-gradient-checkpointing", "--learning-rate", "2e-3",
                           "--max-steps", "2", "--save-every", "1", *extra)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    output_text = done.stdout + done.stderr
    assert done.returncode == 0, output_text[-4000:]
    return output_text


def losses(output: Path) -> dict:
    records = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def optimizer_shards(folder: Path) -> list[dict]:
    shards = sorted((folder / STATE / DEEPSPEED_DIR / "state").glob("zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    return [torch.load(shard, map_location="cpu", weights_only=False) for shard in shards]


def test_two_deepspeed_processes_shard_the_optimizer_and_resume_exactly(dataset):
    root = dataset[0]
    straight, resumed = root / "zero2", root / "zero2_offload_resumed"
    text = launch(ZERO2, dataset, straight)
    assert "2 process(es) on cpu with DeepSpeed" in text  # --cpu honoured, the DeepSpeed config too
    straight_losses = losses(straight)
    assert sorted(straight_losses) == [1, 2] and all(math.isfinite(v) for v in straight_losses.values())

    # ZeRO-2: each rank holds the Adam state of its half of the trained weights only
    first = straight / CHECKPOINTS / "step-00000001"
    state = checkpointing.read_state(first)
    assert (state["world_size"], state["deepspeed"]) == (2, True)
    shards = optimizer_shards(first)
    assert len(shards) == 2
    trained = sum(t.numel() for t in open_tensors(first / "extension.safetensors").values())
    for shard in shards:
        saved = shard["optimizer_state_dict"]
        assert saved["partition_count"] == [2]
        partition = sum(t.numel() for t in saved["single_partition_of_fp32_groups"])
        assert trained / 2 <= partition < trained / 2 + 64  # a half, padded for alignment
        moments = saved["base_optimizer_state"]["state"][0]
        assert moments["exp_avg_sq"].numel() == partition and moments["exp_avg_sq"].abs().sum() > 0

    # resumed from step 1 under ZeRO-2 with optimizer offload: step 2 is the same step
    text = launch(ZERO2_OFFLOAD, dataset, resumed, "--resume", str(first))
    assert "resumed from" in text and "2 process(es) on cpu with DeepSpeed" in text
    assert losses(resumed) == {2: straight_losses[2]}
    offloaded = optimizer_shards(resumed / CHECKPOINTS / "step-00000002")
    assert all(s["ds_config"]["zero_optimization"]["offload_optimizer"]["device"] == "cpu" for s in offloaded)
    for name in ("extension.safetensors", "extension_ema.safetensors"):
        a = open_tensors(straight / CHECKPOINTS / "step-00000002" / name)
        b = open_tensors(resumed / CHECKPOINTS / "step-00000002" / name)
        assert sorted(a.keys()) == sorted(b.keys())
        assert max((a[k] - b[k]).abs().max().item() for k in a.keys()) <= 1e-6, name
