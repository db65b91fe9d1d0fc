"""Sampler functions that run a whole schedule themselves: ComfyUI core's (a ``KSAMPLER``'s
``sampler_function``, k-diffusion's ``sample_*`` signature ``fn(model, x, sigmas, extra_args=None,
callback=None, disable=None, **options)`` with ``model(x, sigma[B]) -> x0``).

Where every frame of a call shares one sigma (full sequence, replacement, context windows) such a
function can run as it is: LongVid hands it the window's noisy frames and a model that sees the
window's context, guidance and guides at the one sigma it is asked about. Guide frames are held in
what the model is shown and predict their own guide (the x0 that keeps a held frame on its path,
``guide + sigma * eps``), and are set exactly at the end. A progressive window holds many levels
per call, which these functions cannot take: there a named sampler runs LongVid's per-frame rule
(:mod:`.step_rules`), and any other is refused.

LongVid cannot see how many calls such a function makes: the plan counts ``model_calls`` per step
(:data:`CALLS_PER_STEP` for core samplers known to make more), so its call count is an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

# calls per step of core samplers LongVid has no per-frame rule for (the plans' estimate)
CALLS_PER_STEP = {"dpm_2_ancestral": 2, "dpmpp_2s_ancestral": 2, "dpmpp_sde": 2, "heunpp2": 3, "seeds_2": 2,
                  "seeds_3": 3}


@dataclass(frozen=True)
class ScheduleSampler:
    """``function`` run over the whole schedule of each window, with ``options``."""

    name: str
    function: Callable
    options: Mapping = field(default_factory=dict)

    whole_schedule = True  # the plans count every step: LongVid cannot skip a step inside the function

    @property
    def model_calls(self) -> int:
        return CALLS_PER_STEP.get(self.name, 1)

    def calls(self, to_zero: bool) -> int:
        return self.model_calls


def run_schedule(walk, sampler: ScheduleSampler, x: torch.Tensor, first_frame: int, model,
                 sigmas: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` (noisy video frames from ``first_frame``, at the schedule's first sigma) through the
    whole schedule by ``sampler``; ``model(x, sigma_per_frame) -> x0`` sees the window. Guide frames
    held (:mod:`.guides`) are shown held and predict their guide; the result ends on them exactly."""
    count = x.shape[1]
    sigmas = walk.sigmas if sigmas is None else sigmas

    def k_model(x_in: torch.Tensor, sigma: torch.Tensor, **_extra) -> torch.Tensor:
        value = float(sigma.reshape(-1)[0])
        shown = walk.held.apply(x_in, first_frame, value)
        x0 = model(shown, torch.full((count,), value, dtype=walk.sigmas.dtype, device=walk.sigmas.device))
        return walk.held.targets(x0, first_frame, value)

    out = sampler.function(k_model, x, sigmas.to(device=x.device), extra_args={}, callback=None, disable=True,
                           **dict(sampler.options))
    return walk.held.apply(out, first_frame, 0.0)


__all__ = ["CALLS_PER_STEP", "ScheduleSampler", "run_schedule"]
