"""Deep-feature caching between consecutive calls on the same frames (DeepCache for LongVid).

Consecutive calls of a rolling sampler often see the same frames, each one step less noisy: the
progressive window between two shifts, one context window from step to step, a replacement window
through its schedule. DeepCache (Ma et al. 2023, arXiv 2312.00858) observes that a UNet's deep
features change little between adjacent steps, so such a call can rerun only the outermost blocks
(first down block, last up block) on its new input and reuse the deep features of the last full
call. A window that just shifted holds new frames with nothing to reuse: it runs fully.

:class:`DeepCacheDenoiser` is a denoiser (the ``denoise(x, sigma, cond) -> x0`` contract) over an
SVD model. Samplers tell it which frames the next call holds (``window(first_frame, frames)``); it
decides per call:

- full, and keep the deep features, when it has none for these frames, when it has reused them
  ``interval`` times already, or when every frame of the call is below ``full_below_sigma`` (the
  schedule's last steps, where detail is settled; default: the last eighth of the steps);
- otherwise reuse them.

``stats`` counts both kinds of call and their frame evaluations exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class DeepCacheSettings:
    """``interval``: reusing calls allowed after each full one on the same frames (0: off).
    ``full_below_sigma``: calls whose frames are all below this sigma always run fully (None: the
    sigma ``full_last_steps`` steps before the end of the schedule). ``max_windows``: windows whose
    features are kept at once (each is one UNet activation at full latent size)."""

    interval: int = 1
    full_below_sigma: float | None = None
    full_last_steps: int | None = None
    max_windows: int = 4

    def __post_init__(self):
        if not isinstance(self.interval, int) or self.interval < 0:
            raise ValueError(f"cache interval must be a whole number >= 0 (0: off); got {self.interval!r}")
        if self.max_windows < 1:
            raise ValueError(f"cache max_windows must be >= 1; got {self.max_windows!r}")

    def threshold(self, sigmas: torch.Tensor) -> float:
        """The sigma below which calls run fully, for a schedule ``sigmas`` (ending in 0)."""
        if self.full_below_sigma is not None:
            return float(self.full_below_sigma)
        steps = len(sigmas) - 1
        last = self.full_last_steps if self.full_last_steps is not None else max(1, steps // 8)
        return float(sigmas[max(0, steps - last)])


@dataclass
class CacheStats:
    """What the cache did: calls and frame evaluations, full and with reused deep features."""

    full_calls: int = 0
    reused_calls: int = 0
    full_frame_evaluations: int = 0
    reused_frame_evaluations: int = 0

    @property
    def calls(self) -> int:
        return self.full_calls + self.reused_calls

    def describe(self) -> str:
        share = self.reused_calls / self.calls if self.calls else 0.0
        return (f"deep cache: {self.reused_calls} of {self.calls} calls reused deep features ({share:.0%}); "
                f"{self.reused_frame_evaluations} of {self.full_frame_evaluations + self.reused_frame_evaluations} "
                "frame evaluations ran only the outer blocks")


@dataclass
class _Entry:
    features: torch.Tensor
    reuses: int = 0


@dataclass
class DeepCacheDenoiser:
    """``denoise(x, sigma, cond)`` over ``model`` (an SVDModel) with deep-feature reuse."""

    model: object
    settings: DeepCacheSettings
    full_below: float
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self):
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self._next: tuple[int, int, bool] | None = None

    def window(self, first_frame: int, frames: int, reversed_frames: bool = False) -> None:
        """The next call holds video frames ``first_frame .. first_frame + frames - 1`` (in reversed
        order with ``reversed_frames``: a Time Reversal Fusion call, whose features are its own)."""
        self._next = (int(first_frame), int(frames), bool(reversed_frames))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        where, self._next = self._next, None
        key = None if where is None else (where, tuple(x.shape))
        entry = self._entries.get(key) if key is not None else None
        settled = bool((torch.as_tensor(sigma) < self.full_below).all())
        frames = x.shape[0] * x.shape[1]
        if entry is not None and entry.reuses < self.settings.interval and not settled:
            entry.reuses += 1
            self._entries.move_to_end(key)
            self.stats.reused_calls += 1
            self.stats.reused_frame_evaluations += frames
            return self.model.denoise(x, sigma, cond, deep_features=entry.features)
        x0, features = self.model.denoise(x, sigma, cond, keep_deep_features=True)
        self.stats.full_calls += 1
        self.stats.full_frame_evaluations += frames
        if key is not None:
            self._entries[key] = _Entry(features)
            self._entries.move_to_end(key)
            while len(self._entries) > self.settings.max_windows:
                self._entries.popitem(last=False)
        return x0


__all__ = ["DeepCacheSettings", "CacheStats", "DeepCacheDenoiser"]
