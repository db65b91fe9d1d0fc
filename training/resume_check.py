"""A resume continues the checkpoint's run: settings that differ from the checkpoint's are refused.

The checkpoint's ``state.json`` holds the settings it was trained with. Before anything is loaded,
:func:`check_resume_settings` compares them with this run's and refuses a resume that changes any,
listing every difference (``setting: checkpoint value -> now``) in one message:

- settings that never change what is trained (where things are written, how often, how many
  steps in all, workers, logging) are not compared (:data:`NOT_COMPARED`);
- settings that can never change on a resume (:data:`FIXED`: what is trained, the size of the
  frame-position table, the progressive window and chunk, the LoRA rank and targets) are refused whatever the flags, since
  the saved weights or the run's meaning depend on them;
- the rest (learning rate, frames, size, data, noise, ...) may change on purpose:
  ``--allow-changed-settings`` lets them through, listed as a note.

The base is compared by content, not by path (:func:`check_resume_base`, once it is loaded): a
checkpoint resumed on other base weights is refused, even with the same architecture.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from training.user_errors import UserError

if TYPE_CHECKING:
    from training.config import TrainConfig

# where the run writes, how often it logs/saves, how it reads data: the same run (max_steps only
# matters to a decaying learning-rate schedule: see `relevant`)
NOT_COMPARED = frozenset({
    "output_dir", "resume", "log_every", "save_every", "keep_last", "eval_every", "num_workers",
    "tensorboard", "weight_hash", "save_diffsynth", "allow_changed_settings", "progress_bar", "cpu", "vae_batch",
    "gradient_checkpointing", "attention", "cache_dir", "estimate_memory",
    # the base is compared by its content identity, not by its path (training/base_check.py)
    "base",
})

# why each of these can never change on a resume
FIXED = {
    "mode": "the checkpoint's weights were trained in its mode (start a new run from its exported weights instead)",
    "exvideo_frames": "the saved frame-position table has this many rows",
    "progressive_window": "the progressive levels the model was trained on are defined by window and chunk",
    "progressive_chunk": "the progressive levels the model was trained on are defined by window and chunk",
    "lora_rank": "the saved LoRA layers have this rank",
    "lora_targets": "the saved LoRA layers adapt these layers",
}

# learning-rate schedules whose value depends on max_steps (they decay towards it)
SCHEDULES_USING_MAX_STEPS = ("linear", "cosine", "cosine_with_restarts", "polynomial")


def relevant(config: TrainConfig, name: str) -> bool:
    """Whether a setting takes part in this run at all (progressive settings without progressive
    mode, the table size without an ExVideo extension, ... do not)."""
    if name.startswith("progressive_") or name in ("variable_length_fraction", "clean_start_fraction"):
        return config.progressive
    if name == "exvideo_frames":
        return config.parameter_set == "exvideo"
    if name.startswith("lora_"):
        return "lora" in config.modes
    if name == "max_steps":
        return getattr(config, "lr_scheduler", "") in SCHEDULES_USING_MAX_STEPS
    return True


# settings that name a file or folder: "data" and "/home/me/data" are the same folder
PATH_SETTINGS = frozenset({"data_dir", "metadata", "image_dir", "extension"})


def normalised(name: str, value):
    if name == "mode":  # "progressive,exvideo" is "exvideo,progressive"
        return ",".join(sorted(m.strip() for m in str(value).split(",") if m.strip()))
    if name in PATH_SETTINGS and isinstance(value, str) and value:
        return str(Path(value).expanduser().resolve())
    return value


def changed_settings(saved: dict, config: TrainConfig) -> list[tuple[str, object, object]]:
    """``(setting, checkpoint value, value now)`` for every compared setting that differs. A setting
    the checkpoint does not record (added since) counts as its default, which it was trained with."""
    out = []
    for f in fields(config):
        name = f.name
        if name in NOT_COMPARED or not relevant(config, name):
            continue
        now = getattr(config, name)
        before = saved.get(name, f.default)
        if normalised(name, before) != normalised(name, now):
            out.append((name, before, now))
    return out


def describe(changes) -> str:
    return "; ".join(f"--{name.replace('_', '-')}: {before!r} -> {now!r}" for name, before, now in changes)


def check_resume_settings(state: dict, config: TrainConfig, folder) -> list[tuple[str, object, object]]:
    """Raise :class:`UserError` listing the changes, unless every change is allowed
    (``--allow-changed-settings``, and none is :data:`FIXED`); returns the allowed changes."""
    saved = state.get("config") or {}
    changes = changed_settings(saved, config)
    fixed = [c for c in changes if c[0] in FIXED]
    if fixed:
        reasons = "; ".join(f"--{name.replace('_', '-')}: {FIXED[name]}" for name, _, _ in fixed)
        others = [c for c in changes if c[0] not in FIXED]
        also = f"; also changed: {describe(others)}" if others else ""
        raise UserError(f"--resume {folder}: these settings cannot change on a resume: {describe(fixed)} "
                        f"({reasons}){also}")
    if changes and not getattr(config, "allow_changed_settings", False):
        raise UserError(f"--resume {folder}: expected the checkpoint's settings; found changes: {describe(changes)} "
                        "(pass --allow-changed-settings if they are intended)")
    return changes


def check_resume_base(state: dict, model, base, folder) -> bool:
    """Raise :class:`UserError` when the loaded base (``model.base_identity``, taken by ``load_svd``)
    is not the base the checkpoint was trained on: its weights only make sense on that base, whatever
    the flags. Returns False when the checkpoint records no base (older checkpoints): nothing to compare."""
    from longvid_core.weights.base_identity import difference, short_name

    recorded, actual = state.get("base_identity"), getattr(model, "base_identity", None)
    if not recorded or not actual:
        return False
    why = difference(recorded, actual)
    if why is not None:
        raise UserError(f"--resume {folder}: expected the base it was trained on (base {short_name(recorded)}); "
                        f"found --base {base}, base {short_name(actual)}: {why}")
    return True


__all__ = ["NOT_COMPARED", "FIXED", "changed_settings", "check_resume_base", "check_resume_settings", "describe",
           "relevant"]
