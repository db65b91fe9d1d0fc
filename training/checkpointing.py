"""Checkpoint folders that a crash or a kill during a save can never damage.

Layout under ``<output_dir>/checkpoints/``::

    step-00001000/                       one complete checkpoint
        extension.safetensors            exvideo: trained extension, LongVid layout (load_svd(base, extension=...))
        extension_ema.safetensors        exvideo: its EMA
        extension_diffsynth.safetensors  exvideo, optional: DiffSynth-Studio layout
        model.safetensors                full: the whole model, SGM single file (load_svd(...))
        model_ema.safetensors            full: the whole model with EMA UNet weights
        lora.safetensors                 lora: the LoRA layers (longvid_core/weights/lora.py; load_svd(..., lora=...))
        lora_ema.safetensors             lora: their EMA
        trainer_state/
            state.json                   step, data position, EMA updates, LR schedule, config, base identity
            optimizer.pt                 optimizer and loss-scaler state            (not under DeepSpeed)
            deepspeed/                   DeepSpeed's own (sharded) optimizer state, under DeepSpeed
            rng/rank{r}.pt               python, numpy, torch (and CUDA) random states of process r
            weight_hash/rank{r}.txt      with --weight-hash: SHA-256 of process r's trainable weights
    latest                               text file: the name of the newest complete checkpoint

A save (:class:`Save`) writes everything into ``.staging-step-XXXXXXXX/`` beside the final folder,
fsyncs every file and the folder, renames the folder to ``step-XXXXXXXX`` in one ``os.rename``,
then replaces ``latest`` atomically (temporary file + fsync + ``os.replace``) and deletes the oldest
folders beyond ``keep_last``. Until the rename nothing that a reader looks at has changed, so a kill
at any moment leaves the previous checkpoint and ``latest`` intact; a leftover staging folder is
deleted by the next save.

Resumable weights are read back from the exported files themselves (they hold the trained values
exactly, in float32 outside DeepSpeed), so a checkpoint stores every tensor once.

:func:`~training.checkpoint_contents.save_checkpoint` and
:func:`~training.checkpoint_contents.load_checkpoint` write a run into this layout and restore it
(weights, optimizer, EMA, data position, random states) so it continues exactly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from training.user_errors import UserError

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE = "trainer_state"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
DEEPSPEED_DIR = "deepspeed"
RNG_DIR = "rng"
HASH_DIR = "weight_hash"
STATE_FORMAT = 1
# Test hook: "STEP:SECONDS" makes the save of step STEP stop for SECONDS after everything is written
# into the staging folder and before it is renamed, after writing a PAUSED file there (so a test can
# kill the process mid-save).
PAUSE_ENV = "LONGVID_TRAIN_PAUSE_IN_SAVE"
PAUSED_MARKER = "PAUSED"

_NAME = re.compile(r"^step-(\d{8,})$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def fsync_file(path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return  # platforms without directory fds (Windows): rename is still atomic there
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(folder)


def write_text_atomic(path, text: str) -> None:
    from longvid_core.weights.checkpoint_io import atomic_write  # here: importing longvid_core imports torch

    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    fsync_dir(path.parent)


def write_json(path, value) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def complete_checkpoints(root) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint under ``root`` (``.../checkpoints``), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _NAME.match(child.name)
        if match and child.is_dir() and (child / STATE / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(root) -> Path | None:
    """The folder ``latest`` names; if it is missing or names no complete checkpoint, the newest
    complete one (or None)."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        target = root / pointer.read_text(encoding="utf-8").strip()
        if (target / STATE / STATE_FILE).is_file():
            return target
        print(f"warning: {pointer} names {target.name}, which is not a complete checkpoint; "
              "using the newest complete one", file=sys.stderr)
    found = complete_checkpoints(root)
    return found[-1][1] if found else None


def resolve_resume(output_dir, resume: str) -> Path | None:
    """``resume``: "" (start fresh), "latest" (the newest checkpoint of ``output_dir`` if there is one,
    else start fresh) or a checkpoint folder."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(Path(output_dir) / CHECKPOINTS)
    folder = Path(resume)
    if folder.is_dir() and folder.name == CHECKPOINTS:
        folder = latest_checkpoint(folder)
    if folder is None or not (folder / STATE / STATE_FILE).is_file():
        found = "nothing there" if folder is None or not Path(folder).exists() else "an incomplete folder"
        raise FileNotFoundError(
            f"--resume {resume}: expected a checkpoint folder (checkpoints/step-XXXXXXXX with {STATE}/{STATE_FILE}) "
            f"or 'latest'; found {found}"
        )
    return folder


def read_state(folder) -> dict:
    path = Path(folder) / STATE / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: expected the trainer's JSON state; found a damaged file ({exc})") from exc
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        state = state if isinstance(state, dict) else {}
        raise ValueError(f"{folder}: expected trainer state format {STATE_FORMAT}; found {state.get('format')}")
    return state


class Save:
    """One checkpoint save, run by every process: ``begin`` (main process clears old staging folders
    and creates this one), everyone writes into :attr:`staging`, then ``commit`` (main process)."""

    def __init__(self, output_dir, step: int):
        self.root = Path(output_dir) / CHECKPOINTS
        self.step = step
        self.name = checkpoint_name(step)
        self.final = self.root / self.name
        self.staging = self.root / f".staging-{self.name}"

    @property
    def state_dir(self) -> Path:
        return self.staging / STATE

    def already_done(self) -> bool:
        return (self.final / STATE / STATE_FILE).is_file()

    def begin(self) -> None:
        """Main process only."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in [*self.root.glob(".staging-*"), *self.root.glob(".deleting-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        (self.state_dir / RNG_DIR).mkdir(parents=True)

    def pause_if_requested(self) -> None:
        request = os.environ.get(PAUSE_ENV, "")
        if not request:
            return
        step, _, seconds = request.partition(":")
        if int(step) == self.step:
            (self.staging / PAUSED_MARKER).write_text(str(os.getpid()))
            time.sleep(float(seconds or 60))
            (self.staging / PAUSED_MARKER).unlink()

    def commit(self, keep_last: int) -> Path:
        """Main process only, after every process has written its part."""
        self.pause_if_requested()
        fsync_tree(self.staging)
        os.rename(self.staging, self.final)
        fsync_dir(self.root)
        write_text_atomic(self.root / LATEST, self.name + "\n")
        prune(self.root, keep_last, protect=self.final)
        return self.final


def prune(root, keep_last: int, protect: Path) -> list[Path]:
    """Delete complete checkpoints beyond the newest ``keep_last`` (0 keeps all); never ``protect``.
    Each is first renamed out of the ``step-*`` names (atomic), so a kill while deleting never leaves
    a half-deleted folder that looks complete."""
    if keep_last <= 0:
        return []
    removed = []
    for _, folder in complete_checkpoints(root)[:-keep_last]:
        if folder.resolve() != protect.resolve():
            doomed = folder.with_name(f".deleting-{folder.name}")
            os.rename(folder, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(folder)
    return removed


__all__ = [
    "CHECKPOINTS", "DEEPSPEED_DIR", "HASH_DIR", "LATEST", "OPTIMIZER_FILE", "PAUSED_MARKER", "PAUSE_ENV", "RNG_DIR",
    "STATE", "STATE_FILE", "STATE_FORMAT", "Save", "checkpoint_name", "complete_checkpoints", "fsync_dir",
    "fsync_file", "fsync_tree", "latest_checkpoint", "prune", "read_state", "resolve_resume", "write_json",
    "write_text_atomic",
]
