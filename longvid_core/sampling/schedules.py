"""Noise schedules: SVD's EDM sigmas and the PA-VDM progressive level table.

Two schedules live here and nowhere else:

- :func:`get_sigmas_karras` — the sigma sequence of an ordinary S-step sampler (Karras et al.
  2022, "Elucidating the Design Space of Diffusion-Based Generative Models", Eq. 5), with SVD's
  range by default. Like k-diffusion's function of the same name it returns ``S + 1`` values, the
  last one 0.
- :func:`progressive_table` — which noise level every chunk of frames is at, at every model call,
  of the progressive autoregressive sampler (PA-VDM: Xie et al., "Progressive Autoregressive Video
  Diffusion Models", Algorithm 1 and Sec. 3.1-3.4). The sampler follows its rows; the trainer
  reuses them for progressive-noise training.

A *level* is a step index ``s`` into the S-step sigma schedule: a frame at level ``s`` holds noise
``sigmas[s]`` (level 0 = pure noise at sigma_max, level S = clean). Because every level of the
table is such an index, each frame walks exactly the schedule ``sigmas[0], ..., sigmas[S-1]`` that
an ordinary S-step sampler would (PA-VDM Sec. 3.1: "it always goes through the same noise level
schedule").
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..problems import Problem, raise_problem
from ..shapes import nearest_multiples

# SVD's EDM noise range (ComfyUI / SGM model_sampling for SVD) and Karras et al.'s rho.
SVD_SIGMA_MIN = 0.002
SVD_SIGMA_MAX = 700.0
KARRAS_RHO = 7.0

# Progressive sampler defaults: 24 noisy latent frames in chunks of 2, 24 steps. Chunks then sit
# d = 24 * 2 / 24 = 2 steps apart and every model call sees 24 + 2 = 26 frames (the clean chunk in
# front), so a long video costs 26/24 ≈ 1.08 × S frame-evaluations per output frame.
DEFAULT_WINDOW = 24
DEFAULT_CHUNK = 2
DEFAULT_STEPS = 24

# Stage labels of the progressive table (PA-VDM Sec. 3.2).
INITIALIZATION = "initialization"  # chunks enter, none has left yet: the window grows
ROLLING = "rolling"  # one chunk enters and one leaves per period: the window is full
TERMINATION = "termination"  # nothing enters any more: the window drains until all is clean
STAGES = (INITIALIZATION, ROLLING, TERMINATION)


def get_sigmas_karras(
    steps: int,
    sigma_min: float = SVD_SIGMA_MIN,
    sigma_max: float = SVD_SIGMA_MAX,
    rho: float = KARRAS_RHO,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Karras et al. (2022) sigma schedule: ``steps + 1`` decreasing values ending in 0.

    ``sigma_i = (sigma_max^(1/rho) + i/(S-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` for
    ``i = 0..S-1``, then 0 (Eq. 5; same as k-diffusion's ``get_sigmas_karras``). Computed in float64
    and returned as ``dtype``. Defaults are SVD's range (0.002 .. 700, rho 7).
    """
    steps = _positive_int("steps", steps)
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"expected 0 < sigma_min < sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0; got {rho}")
    ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
    min_inv_rho = sigma_min ** (1.0 / rho)
    max_inv_rho = sigma_max ** (1.0 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    return sigmas.to(device=device, dtype=dtype)


def check_sigmas(sigmas: torch.Tensor) -> int:
    """Check a sampler's sigma schedule and return its number of steps S.

    Expected: a 1-D tensor of ``S + 1`` values, strictly decreasing, all > 0 except the last,
    which is 0 (the shape :func:`get_sigmas_karras` returns).
    """
    if not isinstance(sigmas, torch.Tensor) or sigmas.dim() != 1 or sigmas.shape[0] < 2:
        found = tuple(sigmas.shape) if isinstance(sigmas, torch.Tensor) else type(sigmas).__name__
        raise ValueError(f"sigmas: expected a 1-D tensor of steps + 1 >= 2 values ending in 0; found {found}")
    values = sigmas.tolist()
    if values[-1] != 0.0:
        raise ValueError(f"sigmas: expected the last value to be 0 (clean); found {values[-1]}")
    if min(values[:-1]) <= 0.0:
        raise ValueError(f"sigmas: expected every value but the last to be > 0; found {min(values[:-1])}")
    if any(a <= b for a, b in zip(values, values[1:])):
        raise ValueError("sigmas: expected strictly decreasing values (sigma_max first, 0 last)")
    return len(values) - 1


def window_problem(window: int, chunk: int, steps: int) -> Problem | None:
    """What is wrong with a progressive-sampler layout, or None.

    ``window`` noisy latent frames are split into ``window / chunk`` chunks of ``chunk`` frames
    that share a level (PA-VDM Sec. 3.3), so ``window`` must be a multiple of ``chunk``. Adjacent
    chunks sit ``d = steps * chunk / window`` steps apart (Sec. 3.1: "S is a multiple of F"), so
    ``steps`` must be a multiple of ``window / chunk``.
    """
    for name, value in (("window", window), ("chunk", chunk), ("steps", steps)):
        try:
            whole = operator.index(value)
        except TypeError:
            whole = None
        if isinstance(value, bool) or whole is None or whole < 1:
            return Problem(name, "a whole number >= 1", repr(value))
    if window % chunk:
        return Problem("window", f"a multiple of chunk ({chunk}) so that whole chunks enter and leave the window "
                       f"together", window, f"use window {nearest_multiples(window, chunk)}, or a chunk that "
                       f"divides {window}")
    chunks_per_window = window // chunk
    if steps % chunks_per_window:
        return Problem("steps", f"a multiple of window/chunk = {window}/{chunk} = {chunks_per_window} so that "
                       "adjacent chunks sit a whole number of steps apart", steps,
                       f"use steps {nearest_multiples(steps, chunks_per_window)}, or change window/chunk")
    return None


def validate_window(window: int, chunk: int, steps: int, frames: int | None = None) -> None:
    """Raise :class:`~longvid_core.problems.InputError` (a ``ValueError``) saying what to change
    unless the layout is possible (:func:`window_problem`) and ``frames``, when given, is at least 1
    (it may be smaller than the window and need not be a multiple of the chunk)."""
    raise_problem(window_problem(window, chunk, steps))
    if frames is not None:
        try:
            frames = operator.index(frames)
        except TypeError:
            raise_problem(Problem("frames", "a whole number of latent frames", repr(frames)))
        if frames < 1:
            raise_problem(Problem("frames", "at least 1 latent frame to generate", frames))


@dataclass(frozen=True)
class ProgressiveRow:
    """One model call of the progressive sampler.

    ``levels[j]`` is the step index of the j-th noisy chunk counted from the front (oldest, least
    noisy) of the window; the chunks are ``first_chunk, first_chunk + 1, ...`` (chunks counted over
    the generated frames). ``clean_chunk``: a clean conditioning chunk sits in front of them
    (overlapped conditioning, Sec. 3.4). ``enters``: the back chunk entered as fresh noise just
    before this call. ``emits``: the front chunk is at the last step, so after this call it is
    clean, is output, and becomes the clean conditioning chunk.
    """

    call: int
    stage: str
    first_chunk: int
    levels: tuple[int, ...]
    clean_chunk: bool
    enters: bool
    emits: bool

    @property
    def chunks(self) -> range:
        return range(self.first_chunk, self.first_chunk + len(self.levels))


@dataclass(frozen=True)
class ProgressiveTable(Sequence):
    """The rows of :func:`progressive_table`, computed on demand (nothing is stored per row, so a
    table for a million frames costs nothing). Index it, iterate it, or take ``len()``."""

    window: int
    chunk: int
    steps: int
    frames: int
    clean_start: bool

    @property
    def chunks_per_window(self) -> int:
        """K = window / chunk."""
        return self.window // self.chunk

    @property
    def chunk_spacing(self) -> int:
        """d = steps * chunk / window: steps between adjacent chunks, and calls per emitted chunk."""
        return self.steps // self.chunks_per_window

    @property
    def num_chunks(self) -> int:
        """Chunks to generate; the last one is shorter when ``frames`` is not a multiple of chunk."""
        return -(-self.frames // self.chunk)

    def chunk_frames(self, chunk_index: int) -> range:
        """Generated-frame offsets (0-based, prefix not counted) of chunk ``chunk_index``."""
        start = chunk_index * self.chunk
        return range(start, min(start + self.chunk, self.frames))

    def slot(self, level: int) -> int:
        """Window slot (0 = front) of a chunk at ``level``: slot j holds levels ``[S-(j+1)d, S-jd)``."""
        return self.chunks_per_window - 1 - level // self.chunk_spacing

    def __len__(self) -> int:
        # Chunk m enters at call m*d and is evaluated at levels 0..S-1 on calls m*d .. m*d+S-1.
        return (self.num_chunks - 1) * self.chunk_spacing + self.steps

    def __getitem__(self, call):
        if isinstance(call, slice):
            return [self[i] for i in range(*call.indices(len(self)))]
        call = operator.index(call)
        total = len(self)
        if call < 0:
            call += total
        if not 0 <= call < total:
            raise IndexError(f"call {call} out of range for a table of {total} calls")
        d, k, m_last = self.chunk_spacing, self.chunks_per_window, self.num_chunks - 1
        period, offset = divmod(call, d)
        first = max(0, period - k + 1)
        last = min(period, m_last)
        # Every call lowers every chunk one step: chunk m is at level call - m*d. In the rolling
        # stage that is level S - d + offset - j*d for the j-th chunk from the front.
        levels = tuple(call - m * d for m in range(first, last + 1))
        if period > m_last:
            stage = TERMINATION
        elif period < k - 1:
            stage = INITIALIZATION
        else:
            stage = ROLLING
        return ProgressiveRow(
            call=call,
            stage=stage,
            first_chunk=first,
            levels=levels,
            clean_chunk=self.clean_start or first > 0,
            enters=levels[-1] == 0,
            emits=levels[0] == self.steps - 1,
        )


def progressive_table(
    window: int = DEFAULT_WINDOW,
    chunk: int = DEFAULT_CHUNK,
    steps: int = DEFAULT_STEPS,
    frames: int | None = None,
    *,
    clean_start: bool = False,
) -> ProgressiveTable:
    """Per-chunk levels at every model call of PA-VDM's progressive sampler (Algorithm 1, Sec. 3.1-3.4).

    The window holds ``window`` noisy frames (F) in ``K = window/chunk`` chunks of ``chunk`` (C)
    frames that share a level (Sec. 3.3); adjacent chunks sit ``d = steps*C/F`` steps apart, and
    every call lowers every chunk by one step. Rolling stage: at call ``r`` of a period of ``d``
    calls, chunk ``j`` from the front is at level ``S - d + r - j*d``; after the front chunk is
    evaluated at level S-1 its Euler step reaches sigma = 0, it is emitted and becomes the clean
    conditioning chunk in front (Sec. 3.4), and a fresh noise chunk enters at the back at level 0.
    Initialization (Sec. 3.2): the window starts with one noise chunk and grows by one chunk every
    ``d`` calls, using the highest levels of the rolling rows. Termination: nothing enters and the
    window drains until every frame is clean. Windows holding fewer than K chunks (also whenever
    ``frames`` < F) follow the same rule: chunk m is at level ``call - m*d``.

    Unlike the released code (levels from a linspace over F+1 points, so only S = F works), levels
    are step indices over ``steps + 1`` sigmas, so any ``steps`` that is a multiple of K works.

    ``frames``: latent frames to generate; the last chunk is short when ``frames`` is not a multiple
    of C. ``None`` gives the canonical table of one full window (K chunks): ``(K-1)*d``
    initialization rows, ``d`` rolling rows (the period that repeats) and ``(K-1)*d`` termination
    rows. ``clean_start``: a clean chunk (e.g. the end of a given video) sits in front from the
    first call. Raises ``ValueError`` (see :func:`validate_window`) for an impossible layout.
    """
    validate_window(window, chunk, steps, frames)
    return ProgressiveTable(
        window=int(window),
        chunk=int(chunk),
        steps=int(steps),
        frames=int(window if frames is None else frames),
        clean_start=bool(clean_start),
    )


def _positive_int(name: str, value) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive whole number; got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be a positive whole number; got {value}")
    return value


__all__ = [
    "SVD_SIGMA_MIN",
    "SVD_SIGMA_MAX",
    "KARRAS_RHO",
    "DEFAULT_WINDOW",
    "DEFAULT_CHUNK",
    "DEFAULT_STEPS",
    "INITIALIZATION",
    "ROLLING",
    "TERMINATION",
    "STAGES",
    "get_sigmas_karras",
    "check_sigmas",
    "validate_window",
    "ProgressiveRow",
    "ProgressiveTable",
    "progressive_table",
]
