"""The trainer's log (``Log``: stdout, ``train_log.jsonl``, TensorBoard via accelerate's tracker) and
``peak_memory_mb``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig


TRACKER_PROJECT = "tensorboard"  # TensorBoard's events go to <output_dir>/tensorboard/ (as before accelerate)


def tracking_options(config: TrainConfig) -> dict:
    """Keyword arguments for ``Accelerator(...)``: accelerate's TensorBoard tracker with ``--tensorboard``."""
    if not config.tensorboard:
        return {}
    return {"log_with": "tensorboard", "project_dir": str(Path(config.output_dir))}


def tracker_init_kwargs(resume_step: int) -> dict:
    """``init_kwargs`` of ``accelerator.init_trackers``: a resumed run replays the steps after its
    checkpoint, so TensorBoard drops the earlier run's events from ``resume_step + 1`` on."""
    return {"tensorboard": {"purge_step": resume_step + 1}} if resume_step > 0 else {}


def drop_records_after(path, step: int) -> int:
    """Rewrite the JSON-lines log ``path`` (atomically) without the records of steps after ``step``
    (the steps a resumed run replays); returns how many were dropped."""
    from training.checkpointing import write_text_atomic

    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            record_step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            continue  # a line cut short by a kill: never complete, drop it
        if record_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        write_text_atomic(path, "".join(kept))
    return len(lines) - len(kept)


class Log:
    """Lines on stdout (main process), ``train_log.jsonl`` and, optionally, TensorBoard through
    accelerate's tracker (``--tensorboard``; the Accelerator is made with :func:`tracking_options`)."""

    def __init__(self, config: TrainConfig, accelerator):
        self.main = accelerator.is_main_process
        self.path = Path(config.output_dir) / "train_log.jsonl"
        self.accelerator = accelerator
        self.config = config
        self.tracking = False

    def start(self, step: int) -> None:
        """Begin metrics at ``step`` (0, or the step of the checkpoint resumed from): records of
        later steps, written by a run that went on past that checkpoint, are dropped. Every process."""
        if self.main:
            dropped = drop_records_after(self.path, step)
            if dropped:
                self.info(f"{self.path.name}: dropped {dropped} records after step {step} (they are replayed)")
        if not self.config.tensorboard:
            return
        if not self.accelerator.log_with:  # accelerate leaves out trackers whose package is missing
            self.info("warning: --tensorboard needs the tensorboard package (pip install tensorboard); "
                      "logging to train_log.jsonl only")
            return
        # no config=: TensorBoard would add a timestamped hparams folder per run; state.json holds it
        self.accelerator.init_trackers(TRACKER_PROJECT, init_kwargs=tracker_init_kwargs(step))
        self.tracking = True

    def info(self, message: str) -> None:
        if self.main:
            tqdm_write(message)

    def warn_any_process(self, message: str, rank: int) -> None:
        tqdm_write(f"[process {rank}] warning: {message}", sys.stderr)

    def metrics(self, step: int, values: dict) -> None:
        if not self.main:
            return
        record = {"step": step, **values}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tracking:
            self.accelerator.log({k: v for k, v in values.items() if isinstance(v, (int, float))}, step=step)
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        tqdm_write(f"step {step}: {shown}")

    def close(self) -> None:
        self.tracking = False  # the trackers themselves are closed by accelerator.end_training()


def tqdm_write(message: str, file=None) -> None:
    """Print a line without breaking a progress bar that may be on the terminal."""
    from tqdm import tqdm

    tqdm.write(message, file=file or sys.stdout)
    (file or sys.stdout).flush()


def peak_memory_mb(device) -> float:
    """CUDA: peak allocated memory; CPU: the process's peak resident set size."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


__all__ = ["Log", "TRACKER_PROJECT", "drop_records_after", "peak_memory_mb", "tracker_init_kwargs",
           "tracking_options", "tqdm_write"]
