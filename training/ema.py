"""Exponential moving average of the trainable weights (ExVideo Sec. 3.3 trains with an EMA of
the weights; PA-VDM's release uses one too).

The average lives in float32 beside the weights it follows. Its decay warms up as
``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early checkpoints are not dominated by
the starting weights. :meth:`EMA.applied` puts the averaged values into the model for as long as a
``with`` block runs (to save or evaluate them) and puts the trained values back afterwards.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

import torch


class EMA:
    def __init__(self, params: Mapping[str, torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1); found {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().to(torch.float32).clone() for name, p in params.items()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, params: Mapping[str, torch.nn.Parameter]) -> None:
        weight = 1.0 - self.current_decay()
        for name, p in params.items():
            self.shadow[name].lerp_(p.detach().to(torch.float32), weight)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], updates: int) -> None:
        missing = sorted(set(self.shadow) - set(tensors))
        unexpected = sorted(set(tensors) - set(self.shadow))
        wrong = sorted(k for k in set(self.shadow) & set(tensors) if tensors[k].shape != self.shadow[k].shape)
        if missing or unexpected or wrong:
            raise ValueError(f"EMA weights do not match the trainable weights (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}, wrong shape {wrong[:3]})")
        for name, value in tensors.items():
            self.shadow[name].copy_(value.to(torch.float32))
        self.updates = int(updates)

    @contextmanager
    def applied(self, params: Mapping[str, torch.nn.Parameter]):
        """Inside the block each parameter's data *is* the float32 average (so files written from the
        model get exact values); the trained data objects are put back afterwards."""
        backup = {name: p.data for name, p in params.items()}
        try:
            for name, p in params.items():
                p.data = self.shadow[name].to(p.device)
            yield
        finally:
            for name, p in params.items():
                p.data = backup[name]
