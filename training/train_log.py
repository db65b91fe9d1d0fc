"""The trainer's log (``Log``: stdout, ``train_log.jsonl``, TensorBoard) and ``peak_memory_mb``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig


class Log:
    """Lines on stdout (main process), ``train_log.jsonl`` and, optionally, TensorBoard."""

    def __init__(self, config: TrainConfig, accelerator):
        self.main = accelerator.is_main_process
        self.path = Path(config.output_dir) / "train_log.jsonl"
        self.writer = None
        if self.main and config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.info("warning: --tensorboard needs the tensorboard package (pip install tensorboard); "
                          "logging to train_log.jsonl only")
            else:
                self.writer = SummaryWriter(str(Path(config.output_dir) / "tensorboard"))

    def info(self, message: str) -> None:
        if self.main:
            print(message, flush=True)

    def warn_any_process(self, message: str, rank: int) -> None:
        print(f"[process {rank}] warning: {message}", file=sys.stderr, flush=True)

    def metrics(self, step: int, values: dict) -> None:
        if not self.main:
            return
        record = {"step": step, **values}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        print(f"step {step}: {shown}", flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def peak_memory_mb(device) -> float:
    """CUDA: peak allocated memory; CPU: the process's peak resident set size."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


__all__ = ["Log", "peak_memory_mb"]
