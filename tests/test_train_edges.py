"""The trainer as a new user meets it: errors in one line, resumes that refuse changed settings or
another base, a log without replayed steps, a light --help, a progress bar, clips read by seeking,
and the learning-rate schedules of diffusers.

One straight 4-step exvideo run on the tiny model (checkpoints at 2 and 4) is shared; resumes are
made from its step-2 checkpoint.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny import write_training_data
from training import checkpointing, train
from training.checkpointing import CHECKPOINTS, LATEST
from training.smoke import smoke_args, write_synthetic_video, write_tiny_base

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "training" / "train.py"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_training_data(tmp_path_factory.mktemp("edges"), suffixes=(".mp4", ".webm"))


def run_args(dataset, output, *extra):
    _, base, videos = dataset
    return smoke_args(base, videos, output, "--no-gradient-checkpointing", "--learning-rate", "2e-3",
                      "--keep-last", "0", *extra)


def log_records(output) -> list[dict]:
    return [json.loads(line) for line in (Path(output) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight_run(dataset):
    output = dataset[0] / "straight"
    assert train.main(run_args(dataset, output, "--max-steps", "4", "--save-every", "2")) == 0
    return output


def step2(run) -> Path:
    return run / CHECKPOINTS / "step-00000002"


def one_error_line(capsys) -> str:
    """stderr of a refused run: exactly one line, ``error: ...``, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def subprocess_env() -> dict:
    import os

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    env.pop(checkpointing.PAUSE_ENV, None)
    return env


# ---------------------------------------------------------------------------------------------
# Resuming with changed settings, or on another base


def test_a_resume_with_changed_settings_lists_them_and_refuses(dataset, straight_run, capsys):
    output = dataset[0] / "changed"
    args = run_args(dataset, output, "--max-steps", "4", "--resume", str(step2(straight_run)),
                    "--learning-rate", "1e-3", "--height", "24")
    assert train.main(args) == 2
    line = one_error_line(capsys)
    assert "--learning-rate: 0.002 -> 0.001" in line and "--height: 16 -> 24" in line
    assert "--allow-changed-settings" in line
    assert not output.exists() or not (output / CHECKPOINTS).exists()


def test_settings_that_never_matter_are_not_compared(dataset, straight_run):
    from training.config import parse_config
    from training.resume_check import changed_settings

    saved = checkpointing.read_state(step2(straight_run))["config"]
    _, base, videos = dataset
    same = parse_config(smoke_args(base, videos, "elsewhere", "--no-gradient-checkpointing", "--learning-rate",
                                   "2e-3", "--keep-last", "7", "--max-steps", "100", "--log-every", "5",
                                   "--save-every", "9", "--num-workers", "3", "--resume", "latest"))
    assert changed_settings(saved, same) == []
    # a decaying schedule is defined over max_steps: then it counts
    cosine = parse_config(smoke_args(base, videos, "o", "--no-gradient-checkpointing", "--learning-rate", "2e-3",
                                     "--max-steps", "100", "--lr-scheduler", "cosine"))
    assert [c[0] for c in changed_settings({**saved, "lr_scheduler": "cosine"}, cosine)] == ["max_steps"]
    # a setting the checkpoint does not record counts as its default
    older = {k: v for k, v in saved.items() if k != "lr_scheduler"}
    assert changed_settings(older, same) == []


def test_changed_settings_go_through_with_the_flag(dataset, straight_run, capsys):
    output = dataset[0] / "allowed"
    args = run_args(dataset, output, "--max-steps", "3", "--resume", str(step2(straight_run)),
                    "--learning-rate", "1e-3", "--allow-changed-settings")
    assert train.main(args) == 0
    assert "note: resuming with changed settings (--allow-changed-settings): --learning-rate: 0.002 -> 0.001" \
        in capsys.readouterr().out
    assert [r["lr"] for r in log_records(output) if "loss" in r] == [1e-3]


@pytest.mark.parametrize("change, why", [
    (("--exvideo-frames", "16"), "--exvideo-frames: 8 -> 16 (--exvideo-frames: the saved frame-position table"),
    (("--mode", "full"), "--mode: 'exvideo' -> 'full'"),
])
def test_settings_that_can_never_change_are_refused_even_with_the_flag(dataset, straight_run, capsys, change, why):
    args = run_args(dataset, dataset[0] / "never", "--max-steps", "4", "--resume", str(step2(straight_run)),
                    "--allow-changed-settings", *change)
    assert train.main(args) == 2
    line = one_error_line(capsys)
    assert "cannot change on a resume" in line and why in line
    assert "also changed" not in line


def test_one_message_lists_fixed_and_other_changes(dataset, straight_run, capsys):
    args = run_args(dataset, dataset[0] / "both", "--max-steps", "4", "--resume", str(step2(straight_run)),
                    "--exvideo-frames", "16", "--seed", "3")
    assert train.main(args) == 2
    line = one_error_line(capsys)
    assert "--exvideo-frames: 8 -> 16" in line and "also changed: --seed: 0 -> 3" in line


def test_the_checkpoint_records_its_base_and_a_resume_on_another_base_is_refused(dataset, straight_run, capsys):
    state = checkpointing.read_state(step2(straight_run))
    assert state["base_identity"]["values"]  # longvid_core.weights.base_identity's sample of the base weights
    other = write_tiny_base(dataset[0] / "other_tiny.safetensors", seed=1)  # same architecture, other weights
    args = run_args(dataset, dataset[0] / "other_base", "--max-steps", "4", "--resume", str(step2(straight_run)),
                    "--allow-changed-settings")
    args[args.index("--base") + 1] = str(other)
    assert train.main(args) == 2
    line = one_error_line(capsys)
    assert "expected the base it was trained on" in line and "other_tiny.safetensors" in line
    assert "sampled weights differ" in line


def test_a_resume_on_a_copy_of_the_base_elsewhere_is_accepted(dataset, straight_run):
    copy = dataset[0] / "moved" / "svd_tiny.safetensors"
    copy.parent.mkdir()
    shutil.copy(dataset[1], copy)
    args = run_args(dataset, dataset[0] / "moved_run", "--max-steps", "3", "--resume", str(step2(straight_run)))
    args[args.index("--base") + 1] = str(copy)
    assert train.main(args) == 0


# ---------------------------------------------------------------------------------------------
# train_log.jsonl after a resume


def test_a_resumed_run_replays_its_steps_once_in_the_log(dataset, straight_run):
    """A run that went on past its last checkpoint (here: step 4 is lost) and is resumed with
    --resume latest logs steps 3 and 4 again; the log keeps one record per step."""
    output = dataset[0] / "replayed"
    shutil.copytree(straight_run, output)
    shutil.rmtree(output / CHECKPOINTS / "step-00000004")
    (output / CHECKPOINTS / LATEST).write_text("step-00000002\n")
    with open(output / "train_log.jsonl", "a") as fh:
        fh.write('{"step": 4, "loss": 1.0')  # a record cut short by the kill
    assert train.main(run_args(dataset, output, "--max-steps", "4", "--save-every", "2", "--resume", "latest")) == 0
    records = [r for r in log_records(output) if "loss" in r]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [r["loss"] for r in records] == [r["loss"] for r in log_records(straight_run) if "loss" in r]


def test_tensorboard_goes_through_accelerates_tracker_and_purges_replayed_steps(tmp_path):
    from training.config import TrainConfig
    from training.train_log import Log, tracker_init_kwargs, tracking_options

    config = TrainConfig(base="b", data_dir="d", output_dir=str(tmp_path), tensorboard=True)
    assert tracking_options(config) == {"log_with": "tensorboard", "project_dir": str(tmp_path)}
    assert tracking_options(TrainConfig(output_dir=str(tmp_path))) == {}
    assert tracker_init_kwargs(0) == {}
    assert tracker_init_kwargs(6) == {"tensorboard": {"purge_step": 7}}

    class FakeAccelerator:
        is_main_process = True
        log_with = ["tensorboard"]
        calls = []

        def init_trackers(self, project, config=None, init_kwargs=None):
            self.calls.append(("init", project, init_kwargs))

        def log(self, values, step):
            self.calls.append(("log", values, step))

    accelerator = FakeAccelerator()
    log = Log(config, accelerator)
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in range(1, 9)))
    log.start(6)
    log.metrics(7, {"loss": 0.5, "note": "text"})
    assert accelerator.calls == [("init", "tensorboard", {"tensorboard": {"purge_step": 7}}),
                                 ("log", {"loss": 0.5}, 7)]
    assert [r["step"] for r in log_records(tmp_path)] == [1, 2, 3, 4, 5, 6, 7]


# ---------------------------------------------------------------------------------------------
# User errors: one line, non-zero exit, no traceback


def test_user_errors_print_one_line(dataset, straight_run, tmp_path, capsys):
    _, base, videos = dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    not_svd = tmp_path / "not_svd.safetensors"
    not_svd.write_bytes(b"this is not a safetensors file" * 10)
    damaged = tmp_path / "damaged"
    shutil.copytree(step2(straight_run), damaged / CHECKPOINTS / "step-00000002")
    (damaged / CHECKPOINTS / "step-00000002" / "trainer_state" / "optimizer.pt").write_bytes(b"cut short")
    bad_state = tmp_path / "bad_state"
    shutil.copytree(step2(straight_run), bad_state / CHECKPOINTS / "step-00000002")
    (bad_state / CHECKPOINTS / "step-00000002" / "trainer_state" / "state.json").write_text('{"format": 1, "st')
    bad_config = tmp_path / "run.toml"
    bad_config.write_text('base = "a\nlearning_rate = \n')

    def refused(args, *expected):
        assert train.main(args) == 2
        line = one_error_line(capsys)
        assert all(text in line for text in expected), line

    def args(output, *extra, base=base, videos=videos):
        return smoke_args(base, videos, tmp_path / output, "--no-gradient-checkpointing", *extra)

    refused(args("a", videos=empty), "--data-dir", "expected .mp4/.webm/.mov videos", "found no video files")
    refused(args("b", videos=tmp_path / "nowhere"), "nowhere does not exist")
    refused(args("c", base=tmp_path / "missing.safetensors"), "missing.safetensors")
    refused(args("d", base=not_svd), "not_svd.safetensors: expected a complete safetensors file")
    refused(args("e", "--resume", str(tmp_path / "nothing")), "--resume", "expected a checkpoint folder")
    refused(args("f", "--learning-rate", "2e-3", "--resume", str(damaged / CHECKPOINTS)), "optimizer.pt: expected a complete file",
            "damaged")
    refused(args("g", "--resume", str(bad_state / CHECKPOINTS)), "state.json: expected the trainer's JSON state")
    refused(args("h", "--precision", "fp16"), "--precision fp16: expected a CUDA GPU", "found the CPU")
    refused(["--config", str(bad_config)], f"--config {bad_config}: expected valid TOML")


def test_a_bug_keeps_its_traceback(monkeypatch):
    from training import user_errors

    def broken(config):
        return [1, 2][5]

    monkeypatch.setattr(train, "train", broken)
    with pytest.raises(IndexError):
        train.main(["--base", "b", "--output-dir", "o", "--data-dir", "d"])
    import torch  # a ValueError raised inside a library is a bug too

    try:
        torch.zeros(2).view(3)
    except RuntimeError as exc:
        assert not user_errors.is_user_error(exc)
    try:
        json.loads("{")
    except ValueError as exc:
        assert not user_errors.is_user_error(exc)


def test_a_user_error_from_the_command_line_is_one_line_and_a_non_zero_exit(dataset, tmp_path):
    _, base, _ = dataset
    done = subprocess.run([sys.executable, str(TRAIN), *smoke_args(base, tmp_path / "empty", tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    # libraries may print their own notices while importing; ours is the one last line
    assert done.stderr.strip().splitlines()[-1] == (f"error: data folder {tmp_path / 'empty'} does not exist "
                                                    "(expected a folder of .mp4/.webm/.mov videos)")


# ---------------------------------------------------------------------------------------------
# --help and argument errors answer before torch is imported


@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["--base", "b", "--data-dir", "d", "--output-dir", "o",
                                                           "--mode", "bogus"], 2), (["--no-such-flag"], 2)])
def test_help_and_argument_errors_import_no_torch(argv, code):
    done = subprocess.run([sys.executable, "-X", "importtime", str(TRAIN), *argv], capture_output=True, text=True,
                          timeout=60, env=subprocess_env())
    assert done.returncode == code, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "training.config" in imported
    heavy = {"torch", "diffusers", "transformers", "accelerate", "numpy", "av"} & imported
    assert not heavy, heavy
    if code:
        assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules (diffusers' get_scheduler), saved and restored


def _schedule(name, warmup=3, max_steps=8, lr=1e-3):
    import torch

    from training.config import TrainConfig
    from training.lr_schedule import make_lr_scheduler

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    config = TrainConfig(lr_scheduler=name, lr_warmup_steps=warmup, max_steps=max_steps, learning_rate=lr)
    return optimizer, make_lr_scheduler(config, optimizer)


def _run_schedule(optimizer, scheduler, steps) -> list[float]:
    from training.lr_schedule import step_learning_rate

    seen = []
    for _ in range(steps):
        seen.append(step_learning_rate(optimizer))
        optimizer.step()
        scheduler.step()
    return seen


def test_the_default_schedule_is_the_trainers_own_warm_up_then_constant():
    import math

    optimizer, scheduler = _schedule("constant_with_warmup", warmup=3)
    lrs = _run_schedule(optimizer, scheduler, 6)
    expected = [1e-3 * (s + 1) / 3 if s < 3 else 1e-3 for s in range(6)]  # what train.py computed before
    assert all(math.isclose(a, b, rel_tol=1e-15) for a, b in zip(lrs, expected)), (lrs, expected)
    assert lrs[2:] == [1e-3] * 4
    optimizer, scheduler = _schedule("constant_with_warmup", warmup=0)
    assert _run_schedule(optimizer, scheduler, 3) == [1e-3] * 3  # no warm-up: the learning rate itself


@pytest.mark.parametrize("name", ["cosine", "linear", "constant_with_warmup"])
def test_a_restored_schedule_continues_exactly(name):
    from training.lr_schedule import restore_lr_scheduler

    optimizer, scheduler = _schedule(name)
    straight = _run_schedule(optimizer, scheduler, 8)
    assert straight[-1] > 0 and (name == "constant_with_warmup" or straight[-1] < straight[3])
    optimizer, scheduler = _schedule(name)
    _run_schedule(optimizer, scheduler, 5)
    saved = json.loads(json.dumps(scheduler.state_dict()))  # as state.json holds it
    optimizer, scheduler = _schedule(name)
    restore_lr_scheduler(scheduler, optimizer, saved, 5)
    assert _run_schedule(optimizer, scheduler, 3) == straight[5:]
    optimizer, scheduler = _schedule(name)  # an older checkpoint without a saved schedule
    restore_lr_scheduler(scheduler, optimizer, None, 5)
    assert _run_schedule(optimizer, scheduler, 3) == straight[5:]


# ---------------------------------------------------------------------------------------------
# Progress bar


def test_the_progress_bar_shows_steps_of_max_steps_and_the_loss_on_a_terminal_only():
    import io

    import torch

    from training.progress_bar import make_progress_bar, progress_bar_wanted, show_loss

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal, log_file = Terminal(), io.StringIO()
    assert progress_bar_wanted(True, True, terminal)
    assert not progress_bar_wanted(True, True, log_file)  # a job's log file or CI: the log lines say it
    assert not progress_bar_wanted(True, False, terminal)  # other processes
    assert not progress_bar_wanted(False, True, terminal)  # --no-progress-bar
    bar = make_progress_bar(2, 5, show=True, stream=terminal)
    show_loss(bar, torch.tensor(0.123456))
    bar.close()
    shown = terminal.getvalue()
    assert "3/5" in shown and "loss=0.1235" in shown
    quiet = make_progress_bar(0, 5, show=False, stream=log_file)
    show_loss(quiet, torch.tensor(float("nan")))
    quiet.close()
    assert log_file.getvalue() == ""


# ---------------------------------------------------------------------------------------------
# Clips read by seeking


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_clips_are_read_by_seeking_with_the_frames_of_a_read_from_the_start(tmp_path, monkeypatch, suffix):
    """60 frames with a keyframe at least every 8 (H.264 with B-frames, or VP9): a clip anywhere is
    the frames a decode from the first frame gives, and costs about one keyframe interval plus
    the clip, not the frames before it."""
    import av
    import torch

    from training import pixels

    video = write_synthetic_video(tmp_path / f"long{suffix}", frames=60, height=32, width=40, keyframe_interval=8)
    with av.open(str(video)) as container:
        every = [pixels.fit_frame(f.to_ndarray(format="rgb24"), 16, 16) for f in container.decode(video=0)]
    assert len(every) == 60
    decoded = []
    real = pixels._decode

    def counting(container, stream):
        for frame in real(container, stream):
            decoded.append(frame.pts)
            yield frame

    monkeypatch.setattr(pixels, "_decode", counting)
    for start, frames, stride in [(0, 4, 1), (29, 4, 1), (41, 5, 3), (52, 4, 2), (56, 4, 1)]:
        decoded.clear()
        clip = pixels.read_clip(video, start, frames, stride, 16, 16)
        expected = torch.stack(every[start:start + (frames - 1) * stride + 1:stride])
        assert torch.equal(clip, expected), (start, frames, stride)
        span = (frames - 1) * stride + 1
        assert len(decoded) <= 8 + span + 2, (start, len(decoded))  # one keyframe interval, the clip, a little lag
    with pytest.raises(pixels.VideoError, match="too short"):
        pixels.read_clip(video, 58, 4, 1, 16, 16)


def test_lora_rank_and_targets_can_never_change_on_a_resume():
    from training.config import TrainConfig
    from training.resume_check import check_resume_settings
    from training.user_errors import UserError

    saved = TrainConfig(base="b", data_dir="d", output_dir="o", mode="lora,progressive").to_dict()
    now = TrainConfig(base="b", data_dir="d", output_dir="o", mode="progressive,lora", lora_rank=8,
                      allow_changed_settings=True)
    with pytest.raises(UserError, match="--lora-rank: 16 -> 8 .*the saved LoRA layers have this rank"):
        check_resume_settings({"config": saved}, now, "ckpt")
    now.lora_rank, now.lora_alpha = 16, 4.0  # the scale may change on purpose
    assert check_resume_settings({"config": saved}, now, "ckpt") == [("lora_alpha", 0.0, 4.0)]
    # without LoRA, its settings take no part
    assert check_resume_settings({"config": {**saved, "mode": "exvideo", "lora_rank": 4}},
                                 TrainConfig(base="b", data_dir="d", output_dir="o"), "ckpt") == []
