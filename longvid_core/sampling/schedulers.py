"""Sigma schedules by the names ComfyUI users pick on a KSampler (``scheduler``), for SVD's EDM
noise range (sigma 0.002 .. 700; core runs SVD with ``ModelSamplingContinuousEDM``, whose discrete
table is 1000 sigmas log-spaced over that range and whose timestep is ``0.25 * ln(sigma)``).

Each returns ``steps + 1`` strictly decreasing float64 values ending in 0, the shape every LongVid
sampler takes (:func:`~.schedules.check_sigmas`); in progressive mode they are the levels of the
table. The formulas are those of core's ``comfy/samplers.py`` (and k-diffusion's
``get_sigmas_*``), written here from their definitions:

- ``karras``: Karras et al. 2022, Eq. 5, rho 7 (LongVid's schedule before samplers had names);
- ``exponential``: sigmas evenly spaced in ln(sigma);
- ``normal``: evenly spaced model timesteps from sigma_max to sigma_min, then 0 — for EDM's
  timestep ``0.25 ln(sigma)`` the same values as ``exponential``;
- ``sgm_uniform``: ``steps + 1`` evenly spaced timesteps, the last dropped, then 0;
- ``simple``: every (1000 / steps)-th entry of the model's table, from the top;
- ``beta``: table entries at the quantiles of a Beta(0.6, 0.6) distribution (Lee et al. 2024),
  repeats dropped;
- ``linear_quadratic``: linear, then quadratic in 1 - sigma / sigma_max (Mochi's schedule);
- ``kl_optimal``: evenly spaced in arctan(sigma) (Sabour et al. 2024, "Align Your Steps", Eq. 8);
- ``align_your_steps``: AYS's published 10-step SVD list, log-linearly resampled to ``steps``.
"""

from __future__ import annotations

import functools
import math

import torch

from ..problems import Problem
from .schedules import KARRAS_RHO, SVD_SIGMA_MAX, SVD_SIGMA_MIN, get_sigmas_karras

TABLE_SIZE = 1000  # core's discrete sigma table for continuous EDM models
# Align Your Steps' noise levels for SVD (core's AlignYourStepsScheduler, model_type "SVD"): 10 steps.
AYS_SVD = (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002)
BETA_ALPHA = BETA_BETA = 0.6  # core's beta scheduler defaults
LINEAR_QUADRATIC_THRESHOLD = 0.025


def model_table(sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    """The 1000 sigmas log-spaced from ``sigma_min`` to ``sigma_max`` (rising), float64."""
    return torch.linspace(math.log(sigma_min), math.log(sigma_max), TABLE_SIZE, dtype=torch.float64).exp()


def _with_zero(values) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64)
    return torch.cat([values, values.new_zeros(1)])


def karras(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    return get_sigmas_karras(steps, sigma_min, sigma_max, KARRAS_RHO, dtype=torch.float64)


def exponential(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    return _with_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), steps, dtype=torch.float64).exp())


def normal(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    # timestep(sigma) = 0.25 ln(sigma): sigma_min is far from 0, so sigma 0 is appended
    start, end = 0.25 * math.log(sigma_max), 0.25 * math.log(sigma_min)
    return _with_zero((torch.linspace(start, end, steps, dtype=torch.float64) / 0.25).exp())


def sgm_uniform(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    start, end = 0.25 * math.log(sigma_max), 0.25 * math.log(sigma_min)
    return _with_zero((torch.linspace(start, end, steps + 1, dtype=torch.float64)[:-1] / 0.25).exp())


def simple(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    table = model_table(sigma_min, sigma_max)
    stride = len(table) / steps
    return _with_zero([float(table[-(1 + int(i * stride))]) for i in range(steps)])


def beta(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX,
         alpha: float = BETA_ALPHA, beta_: float = BETA_BETA) -> torch.Tensor:
    table = model_table(sigma_min, sigma_max)
    last = len(table) - 1
    chosen, previous = [], None
    for i in range(steps):
        index = round_half_even(beta_quantile(1.0 - i / steps, alpha, beta_) * last)
        if index != previous:  # repeats dropped, as core does
            chosen.append(float(table[index]))
        previous = index
    return _with_zero(chosen)


def linear_quadratic(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX,
                     threshold: float = LINEAR_QUADRATIC_THRESHOLD) -> torch.Tensor:
    if steps == 1:
        rising = [0.0, 1.0]
    else:
        linear_steps = steps // 2
        linear = [i * threshold / linear_steps for i in range(linear_steps)]
        step_diff = linear_steps - threshold * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = step_diff / (linear_steps * quadratic_steps ** 2)
        linear_coef = threshold / linear_steps - 2 * step_diff / (quadratic_steps ** 2)
        const = quadratic_coef * linear_steps ** 2
        quadratic = [quadratic_coef * i ** 2 + linear_coef * i + const for i in range(linear_steps, steps)]
        rising = linear + quadratic + [1.0]
    return torch.tensor([1.0 - x for x in rising], dtype=torch.float64) * sigma_max


def kl_optimal(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    if steps == 1:
        return _with_zero([sigma_max])
    t = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    return _with_zero(torch.tan(t * math.atan(sigma_min) + (1 - t) * math.atan(sigma_max)))


def align_your_steps(steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX) -> torch.Tensor:
    levels = list(AYS_SVD)
    if steps + 1 != len(levels):  # log-linear resampling over an even grid, as core's node does
        rising = [math.log(v) for v in reversed(levels)]
        grid = [i / (len(levels) - 1) for i in range(len(levels))]
        levels = [math.exp(_interpolate(i / steps, grid, rising)) for i in range(steps + 1)][::-1]
    levels[-1] = 0.0
    return torch.tensor(levels, dtype=torch.float64)


SCHEDULERS = {
    # core's order (comfy/samplers.py SCHEDULER_NAMES), then Align Your Steps (a node of its own in core)
    "simple": simple, "sgm_uniform": sgm_uniform, "karras": karras, "exponential": exponential,
    "normal": normal, "beta": beta, "linear_quadratic": linear_quadratic, "kl_optimal": kl_optimal,
    "align_your_steps": align_your_steps,
}
DEFAULT_SCHEDULER = "karras"  # the same as run/modes.py's, which the command line reads without torch


def scheduler_problem(name) -> Problem | None:
    if name not in SCHEDULERS:
        return Problem("scheduler", f"one of {', '.join(SCHEDULERS)}", repr(name))
    return None


@functools.lru_cache(maxsize=64)
def scheduler_levels(name: str, steps: int) -> int:
    """How many levels the scheduler ``name`` gives for ``steps`` (fewer than ``steps`` when it drops
    repeats: ``beta`` at many steps)."""
    return len(SCHEDULERS[name](steps)) - 1


def scheduled_sigmas(name: str, steps: int, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``steps + 1`` sigmas of the scheduler ``name`` (SVD's range), ending in 0. A scheduler that
    drops repeated levels (``beta`` at many steps) may return fewer; callers check the count."""
    from ..problems import raise_problem

    raise_problem(scheduler_problem(name))
    return SCHEDULERS[name](steps).to(device=device, dtype=dtype)


# ---------------------------------------------------------------- numerical helpers (no scipy)


def round_half_even(value: float) -> int:
    """numpy's rint: halves go to the even neighbour."""
    return int(round(value))


def _interpolate(x: float, xs: list[float], ys: list[float]) -> float:
    """numpy.interp on an increasing grid."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            w = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            return ys[i - 1] + w * (ys[i] - ys[i - 1])
    return ys[-1]


def _beta_cdf(x: float, a: float, b: float) -> float:
    """Regularised incomplete beta I_x(a, b), by Gauss-Legendre quadrature after substitutions that
    remove the endpoint singularities: t = u^(1/a) below 1/2, and the mirror image above it."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > 0.5:
        return 1.0 - _beta_cdf(1.0 - x, b, a)
    # t = u^(1/a): t^(a-1) dt = du / a, so I_x = (1/a) * int_0^{x^a} (1 - u^(1/a))^(b-1) du / B(a, b)
    upper = x ** a
    nodes, weights = _GAUSS
    total = 0.0
    for node, weight in zip(nodes, weights):
        u = 0.5 * upper * (node + 1.0)
        total += weight * (1.0 - u ** (1.0 / a)) ** (b - 1.0)
    integral = 0.5 * upper * total / a
    return integral / math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))


def beta_quantile(q: float, a: float, b: float) -> float:
    """The x with I_x(a, b) = q (bisection to double precision)."""
    if q <= 0.0:
        return 0.0
    if q >= 1.0:
        return 1.0
    low, high = 0.0, 1.0
    for _ in range(64):
        middle = 0.5 * (low + high)
        if _beta_cdf(middle, a, b) < q:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _gauss_legendre(n: int) -> tuple[list[float], list[float]]:
    nodes, weights = [], []
    for i in range(1, n + 1):
        x = math.cos(math.pi * (i - 0.25) / (n + 0.5))
        for _ in range(100):
            p0, p1 = 1.0, x
            for k in range(2, n + 1):
                p0, p1 = p1, ((2 * k - 1) * x * p1 - (k - 1) * p0) / k
            derivative = n * (x * p1 - p0) / (x * x - 1.0)
            step = p1 / derivative
            x -= step
            if abs(step) < 1e-15:
                break
        nodes.append(x)
        weights.append(2.0 / ((1.0 - x * x) * derivative * derivative))
    return nodes, weights


_GAUSS = _gauss_legendre(64)


__all__ = ["AYS_SVD", "DEFAULT_SCHEDULER", "SCHEDULERS", "beta_quantile", "model_table", "scheduled_sigmas",
           "scheduler_levels", "scheduler_problem"]
