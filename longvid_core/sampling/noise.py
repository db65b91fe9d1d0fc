"""Frame noise: standard normal noise for one latent frame, a function of (seed, stream, frame)
only, so a frame's noise does not depend on the window, the sampler or the device."""

from __future__ import annotations

from typing import Sequence

import torch

_MASK64 = (1 << 64) - 1


def frame_noise(
    seed: int,
    frame_index: int,
    shape: Sequence[int],
    *,
    stream: int = 0,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> torch.Tensor:
    """Standard normal noise for one latent frame ``shape = (B, 4, h, w)``, a function of ``(seed,
    stream, frame_index)`` only. Stream 0 is the start noise; other streams are noise drawn while
    sampling. Drawn on the CPU so that the numbers do not depend on the device."""
    generator = torch.Generator(device="cpu").manual_seed(_mix64(seed, stream, frame_index))
    noise = torch.randn(tuple(shape), generator=generator, dtype=torch.float32)
    return noise.to(device=device, dtype=dtype)


def _mix64(*values: int) -> int:
    """SplitMix64 over the values: a 64-bit generator seed for each distinct tuple."""
    state = 0
    for value in values:
        state = (state + (int(value) & _MASK64) + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state


__all__ = ["frame_noise"]
