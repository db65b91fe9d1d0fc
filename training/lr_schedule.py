"""The learning-rate schedule: diffusers' ``get_scheduler`` (``--lr-scheduler``), saved in checkpoints.

Optimizer step ``s`` (0-based) trains at the schedule's value for ``s + 1``, and the schedule is
``max_steps + 1`` steps long. So the first warm-up step is not spent at a learning rate of 0 and
a decaying schedule's last step not at 0 either; ``constant_with_warmup`` (the default) gives
exactly what the trainer did before it used diffusers: ``lr * (s + 1) / warmup`` during the
warm-up (up to the last bit of rounding), then ``lr``.

The scheduler's state goes into the checkpoint's ``state.json`` (plain numbers), so a resumed run
continues the schedule exactly; it is not prepared by accelerate, which would step it once per
process.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from training.config import LR_SCHEDULERS

if TYPE_CHECKING:
    from training.config import TrainConfig


def advance(scheduler, steps: int) -> None:
    """Step ``scheduler`` ``steps`` times without an optimizer step (torch would warn of the order)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*lr_scheduler\.step\(\)", category=UserWarning)
        for _ in range(steps):
            scheduler.step()


def make_lr_scheduler(config: TrainConfig, optimizer):
    """The schedule set on ``optimizer``'s learning rates, positioned for the first step."""
    from diffusers.optimization import get_scheduler

    scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                              num_training_steps=config.max_steps + 1)
    advance(scheduler, 1)  # step 0 trains at the value for 1 (see the module doc)
    return scheduler


def step_learning_rate(optimizer) -> float:
    """The learning rate the next optimizer step uses (the first group's)."""
    return float(optimizer.param_groups[0]["lr"])


def restore_lr_scheduler(scheduler, optimizer, saved: dict | None, step: int) -> None:
    """Continue at checkpoint step ``step``: the saved position in the schedule (or, for a
    checkpoint saved without one, by older trainers whose schedule was constant_with_warmup, the
    position that step implies), with this run's ``--learning-rate`` (which differs only with
    ``--allow-changed-settings``). Sets the optimizer's learning rates, which its own restored
    state would otherwise take from the checkpoint."""
    base_lrs = list(scheduler.base_lrs)
    if saved is not None:
        scheduler.load_state_dict(saved)
    else:
        advance(scheduler, step)
    scheduler.base_lrs = base_lrs
    scheduler.last_epoch -= 1
    advance(scheduler, 1)  # recomputes the value at the position, as the uninterrupted run did


__all__ = ["LR_SCHEDULERS", "advance", "make_lr_scheduler", "restore_lr_scheduler", "step_learning_rate"]
