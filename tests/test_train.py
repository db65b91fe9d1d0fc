"""The trainer (``training/train.py``) on a tiny random SVD with synthetic videos the tests write as
real .mp4/.webm/.mov files with PyAV.

One straight exvideo run (4 steps, checkpoints at 2 and 4) is shared by the tests of the loss, the
saved extension and resuming. One torchrun launch of two CPU processes checks that they agree and
is killed in the middle of a save. Everything runs single-threaded (on a busy two-core machine
several times faster than two contended threads).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from longvid_core import load_svd
from longvid_core.networks.conditioning import SVDCond
from longvid_core.run.pipeline import TRAINING_FREE, SamplingSettings, resolve_auto, training_free
from longvid_core.weights.checkpoint_io import open_tensors
from longvid_core.weights.loading import sgm_state_dict
from longvid_core.weights.trained_for import TrainedFor
from tests.tiny import write_training_data
from training import checkpoint_contents, checkpointing, train
from training.checkpointing import CHECKPOINTS, LATEST, PAUSE_ENV, PAUSED_MARKER
from training.smoke import smoke_args

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "training" / "train.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A tiny SVD and a folder of three good videos (mp4, webm, mov, 32x32, cropped to 16x16 by the
    trainer) plus one broken file the trainer must report and skip."""
    root, base, videos = write_training_data(tmp_path_factory.mktemp("train"))
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 4)
    return root, base, videos


def run_args(dataset, output, *extra):
    _, base, videos = dataset
    return smoke_args(base, videos, output, "--no-gradient-checkpointing", "--learning-rate", "2e-3", *extra)


def log_records(output) -> list[dict]:
    return [json.loads(line) for line in (Path(output) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight_run(dataset):
    root = dataset[0]
    output = root / "straight"
    code = train.main(run_args(dataset, output, "--max-steps", "4", "--save-every", "2", "--eval-every", "4"))
    assert code == 0
    return output


def subprocess_env(**extra) -> dict:
    env = {name: value for name, value in os.environ.items() if name != PAUSE_ENV}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


# ---------------------------------------------------------------------------------------------
# Command line


def test_help_lists_the_settings_without_loading_torch():
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(TRAIN), "--help"], capture_output=True, text=True, timeout=60,
                          env=subprocess_env())
    assert done.returncode == 0, done.stderr
    for flag in ("--base", "--mode", "--exvideo-frames", "--progressive-shift", "--image-batch-fraction",
                 "--loss-weighting", "--sigma-sampling", "--resume", "--keep-last", "--config"):
        assert flag in done.stdout
    assert time.perf_counter() - started < 20


def test_config_file_then_flags(tmp_path):
    from training.config import parse_config

    config_file = tmp_path / "run.toml"
    config_file.write_text('base = "a.safetensors"\noutput-dir = "out"\ndata_dir = "videos"\n'
                           'learning_rate = 1\nmode = "full,progressive"\n')
    config = parse_config(["--config", str(config_file), "--learning-rate", "0.5"])
    assert (config.learning_rate, config.mode, config.output_dir) == (0.5, "full,progressive", "out")
    assert config.clip_frames() == config.progressive_chunk + config.progressive_window
    config_file.write_text('base = "a"\nlearning_rat = 1e-5\n')
    with pytest.raises(ValueError, match="unknown setting 'learning_rat'; valid settings: .*learning_rate"):
        parse_config(["--config", str(config_file)])
    with pytest.raises(ValueError, match="exvideo and full are two different sets"):
        parse_config(["--base", "a", "--output-dir", "o", "--data-dir", "d", "--mode", "exvideo,full"])


# ---------------------------------------------------------------------------------------------
# The straight run: loss, exports, report, logs


def test_loss_falls_on_a_fixed_batch(straight_run):
    evals = [r["eval_loss"] for r in log_records(straight_run) if "eval_loss" in r]
    assert len(evals) == 2  # before the first step and after the last
    assert evals[1] < 0.8 * evals[0], evals


def test_logs_throughput_and_memory(straight_run):
    steps = [r for r in log_records(straight_run) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    for record in steps:
        assert record["steps_per_s"] > 0 and record["samples_per_s"] > 0 and record["peak_mem_mb"] > 10


def test_broken_video_is_reported_and_skipped(straight_run):
    report = json.loads((straight_run / "skipped_videos.json").read_text())
    assert report["usable"] == 3
    assert [Path(s["path"]).name for s in report["skipped"]] == ["broken.mp4"]
    assert "unreadable" in report["skipped"][0]["reason"]


def test_saved_extension_loads_and_changes_the_output(dataset, straight_run):
    _, base, _ = dataset
    folder = straight_run / CHECKPOINTS / "step-00000004"
    assert (straight_run / CHECKPOINTS / LATEST).read_text().strip() == folder.name
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 4, 4, 8, 8, generator=gen)
    cond = SVDCond(torch.randn(1, 1, 32, generator=gen), torch.randn(1, 4, 8, 8, generator=gen),
                   torch.tensor([[5.0, 127.0, 0.0]]))
    sigma = torch.full((1, 4), 2.0)
    with torch.no_grad():
        plain = load_svd(base).denoise(x, sigma, cond)
        outputs = {name: load_svd(base, extension=folder / name).denoise(x, sigma, cond)
                   for name in ("extension.safetensors", "extension_ema.safetensors")}
    # a fresh extension reproduces SVD exactly for short clips, so any change is the training's
    assert (outputs["extension.safetensors"] - plain).abs().max() > 1e-3
    assert (outputs["extension_ema.safetensors"] - plain).abs().max() > 1e-4
    assert not torch.equal(outputs["extension.safetensors"], outputs["extension_ema.safetensors"])


def test_a_fresh_run_does_not_write_over_an_earlier_one(dataset, straight_run, capsys):
    assert train.main(run_args(dataset, straight_run, "--max-steps", "4")) != 0
    error = capsys.readouterr().err.strip()
    assert re.fullmatch(r"error: .*already holds checkpoints .*step-00000004.*--resume latest.*", error), error


def test_resume_matches_the_uninterrupted_run(dataset, straight_run):
    resumed = dataset[0] / "resumed"
    code = train.main(run_args(dataset, resumed, "--max-steps", "4", "--save-every", "2",
                               "--resume", str(straight_run / CHECKPOINTS / "step-00000002")))
    assert code == 0
    assert [r["step"] for r in log_records(resumed) if "loss" in r] == [3, 4]
    straight_losses = [r["loss"] for r in log_records(straight_run) if "loss" in r][2:]
    assert [r["loss"] for r in log_records(resumed) if "loss" in r] == straight_losses
    for name in ("extension.safetensors", "extension_ema.safetensors"):
        a = open_tensors(straight_run / CHECKPOINTS / "step-00000004" / name)
        b = open_tensors(resumed / CHECKPOINTS / "step-00000004" / name)
        assert sorted(a.keys()) == sorted(b.keys())
        worst = max((a[k] - b[k]).abs().max().item() for k in a.keys())
        assert worst <= 1e-6, (name, worst)
    state = checkpointing.read_state(resumed / CHECKPOINTS / "step-00000004")
    assert (state["step"], state["video_batches"]) == (4, 4)
    optimizers = [torch.load(run / CHECKPOINTS / "step-00000004" / "trainer_state" / "optimizer.pt", weights_only=True)
                  for run in (straight_run, resumed)]
    moments = [[s["exp_avg_sq"] for s in o["optimizer"]["state"].values()] for o in optimizers]
    assert all(torch.equal(a, b) for a, b in zip(*moments))


# ---------------------------------------------------------------------------------------------
# Two processes (DDP over gloo), killed during a save, resumed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kill_tree(process) -> None:
    """SIGKILL torchrun and its workers: torchrun starts each worker in a session of its own, so
    killing torchrun's process group alone would leave the workers running."""
    import psutil

    try:
        workers = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    os.killpg(process.pid, signal.SIGKILL)
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(workers, timeout=30)


@pytest.mark.skipif(sys.platform == "win32", reason="kills a POSIX process group")
def test_two_processes_agree_and_a_kill_during_save_leaves_the_previous_checkpoint(dataset):
    """torchrun with two CPU processes; every checkpoint records each process's weight hash. The
    save of step 2 is held open by a test hook and the whole process group is SIGKILLed there."""
    output = dataset[0] / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
               str(TRAIN), *run_args(dataset, output, "--max-steps", "2", "--save-every", "1", "--weight-hash")]
    log_file = dataset[0] / "ddp.log"
    with open(log_file, "w") as log:
        process = subprocess.Popen(command, env=subprocess_env(**{PAUSE_ENV: "2:300"}), stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    checkpoints = output / CHECKPOINTS
    staging = checkpoints / ".staging-step-00000002"
    try:
        deadline = time.monotonic() + 400
        while not (staging / PAUSED_MARKER).exists():
            assert process.poll() is None, log_file.read_text()[-4000:]
            assert time.monotonic() < deadline, "the trainer never reached the save of step 2"
            time.sleep(0.2)
        _kill_tree(process)  # mid-save: all written, nothing renamed yet
    finally:
        if process.poll() is None:
            _kill_tree(process)
        process.wait(timeout=60)
    assert "2 process(es)" in log_file.read_text()

    # the previous checkpoint is intact, loadable, and both processes held the same weights
    assert (checkpoints / LATEST).read_text().strip() == "step-00000001"
    assert not (checkpoints / "step-00000002").exists() and staging.exists()
    previous = checkpoints / "step-00000001"
    state = checkpointing.read_state(previous)
    assert (state["world_size"], state["step"]) == (2, 1)
    hashes = [(previous / "trainer_state" / "weight_hash" / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert hashes[0] == hashes[1]
    assert hashes[0].strip() != checkpoint_contents.weight_hash(_fresh_extension_parameters(dataset[1]))  # it did train
    load_svd(dataset[1], extension=previous / "extension.safetensors")

    # resuming (here with one process) finishes the interrupted step and clears the staging folder
    assert train.main(run_args(dataset, output, "--max-steps", "2", "--save-every", "1", "--resume", "latest")) == 0
    assert (checkpoints / LATEST).read_text().strip() == "step-00000002"
    assert not staging.exists()
    assert checkpointing.read_state(checkpoints / "step-00000002")["step"] == 2


def _fresh_extension_parameters(base):
    from longvid_core.networks import exvideo

    model = load_svd(base)
    exvideo.extend_unet(model, 8)
    return exvideo.extension_parameters(model)


# ---------------------------------------------------------------------------------------------
# Progressive mode, still-image batches, latent cache, gradient checkpointing, full mode


def test_progressive_run_with_stills_cache_and_checkpointing(dataset, capsys):
    output, cache = dataset[0] / "progressive", dataset[0] / "cache"
    args = run_args(dataset, output, "--mode", "exvideo,progressive", "--frames", "0", "--progressive-window", "4",
                    "--progressive-chunk", "2", "--progressive-steps", "4", "--image-batch-fraction", "0.5",
                    "--cache-dir", str(cache), "--gradient-checkpointing", "--max-steps", "2", "--save-every", "2")
    assert train.main(args) == 0
    records = [r for r in log_records(output) if "loss" in r]
    assert len(records) == 2 and all(0 < r["loss"] < 100 for r in records)
    assert records[-1]["still_batches"] == 1  # seed 0 makes the first micro-batch a still, the second a video
    assert len(list(cache.rglob("*.safetensors"))) == 1  # the video clip was encoded once and cached
    # fixed clip starts: 3 videos x 1 clip of 6 of their 10 frames; 2 steps x 1 clip over 3 clips
    assert ("data: --cache-dir fixes clip starts: 3 distinct clips (3 videos x 1) use 18 of 30 source frames "
            "(60%); 2 steps see each clip about 1 times") in capsys.readouterr().out


def test_rollout_batches_train_through_the_wrapped_model(dataset):
    output = dataset[0] / "rollout"
    args = run_args(dataset, output, "--mode", "full,progressive", "--frames", "0", "--progressive-window", "4",
                    "--progressive-chunk", "2", "--progressive-steps", "4", "--progressive-rollout-fraction", "1",
                    "--progressive-rollout-periods", "1", "--max-steps", "2", "--ema-decay", "0")
    assert train.main(args) == 0
    records = [r for r in log_records(output) if "loss" in r]
    assert len(records) == 2 and all(0 < r["loss"] < 100 for r in records)
    model = load_svd(output / CHECKPOINTS / "step-00000002" / "model.safetensors")
    trained = sgm_state_dict(model)
    plain = open_tensors(dataset[1])
    assert any(not torch.equal(trained[k], plain[k]) for k in trained if k.startswith("model.diffusion_model."))
    # the file says what it was trained for, so `auto` samples it as trained
    assert model.trained_for == TrainedFor(progressive=True, clip_frames=6, window=4, chunk=2, steps=4)
    chosen, why = resolve_auto(model, SamplingSettings(24, window=24, chunk=2, steps=24))
    assert (chosen.mode, chosen.window, chosen.chunk, chosen.steps, chosen.partitions) == ("progressive", 4, 2, 4, 1)
    assert "fine-tuned progressively" in why
    plain_settings = SamplingSettings(24)  # the plain SVD layout base gets the training-free setting
    assert resolve_auto(load_svd(dataset[1]), plain_settings)[0] == training_free(plain_settings, TRAINING_FREE)


def test_full_mode_saves_a_whole_model(dataset):
    output = dataset[0] / "full"
    args = run_args(dataset, output, "--mode", "full", "--frames", "2", "--max-steps", "1", "--ema-decay", "0",
                    "--guide-frame-fraction", "0.5")
    assert train.main(args) == 0
    model = load_svd(output / CHECKPOINTS / "step-00000001" / "model.safetensors")
    assert model.trained_for == TrainedFor(progressive=False, clip_frames=2, guide_frames=0.5)
    one_level = SamplingSettings(24)  # trained with one level per clip: the training-free setting
    assert resolve_auto(model, one_level)[0] == training_free(one_level, TRAINING_FREE)
    trained = sgm_state_dict(model)
    plain = open_tensors(dataset[1])
    unet = [k for k in trained if k.startswith("model.diffusion_model.")]
    changed = [k for k in unet if not torch.equal(trained[k], plain[k])]
    assert len(changed) > 0.5 * len(unet)
    assert all(torch.equal(trained[k], plain[k]) for k in trained if k.startswith("first_stage_model."))
