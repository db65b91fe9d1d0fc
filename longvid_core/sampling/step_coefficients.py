"""The weights multistep step rules (``step_rules.py``) put on a frame's earlier slopes or
predictions: functions of sigmas only, so a progressive window's frames, which share a schedule,
share them (cached).

- :func:`lagrange_integral`: LMS's Adams-Bashforth weights in sigma (k-diffusion's sample_lms);
- :func:`deis_coefficients`: DEIS "tab" (Zhang & Chen 2023; core's ``k_diffusion/deis.py``);
- :func:`uni_pc_coefficients`: UniPC's predictor and corrector (Zhao et al. 2023; core's
  ``extra_samplers/uni_pc.py``).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def lagrange_integral(times: list[float], j: int, start: float, end: float) -> float:
    """The integral from ``start`` to ``end`` of the Lagrange basis polynomial that is 1 at
    ``times[j]`` and 0 at the other ``times`` (exact: the polynomial's coefficients integrated)."""
    coefficients = [1.0]  # lowest power first
    for k, t in enumerate(times):
        if k == j:
            continue
        scale = 1.0 / (times[j] - t)
        shifted = [0.0] + coefficients  # times tau
        coefficients = [(a - t * b) * scale for a, b in zip(shifted, coefficients + [0.0])]
    return sum(c / (p + 1) * (end ** (p + 1) - start ** (p + 1)) for p, c in enumerate(coefficients))


# DEIS's variance-preserving time: sigma^2 + 1 = exp(beta_d t^2 / 2 + beta_min t), with beta_d and
# beta_min such that t(0.002) = 1e-3 and t(80) = 1 (core's deis.py, after EDM's defaults)
_DEIS_LOG_MAX = math.log(80.0 ** 2 + 1)
_DEIS_BETA_D = 2 * (math.log(0.002 ** 2 + 1) / 1e-3 - _DEIS_LOG_MAX) / (1e-3 - 1)
_DEIS_BETA_MIN = _DEIS_LOG_MAX - 0.5 * _DEIS_BETA_D
DEIS_QUADRATURE_POINTS = 10_000  # core sums the integrand at this many points of each step


def _deis_time(sigma: float) -> float:
    root = math.sqrt(_DEIS_BETA_MIN ** 2 + 2 * _DEIS_BETA_D * math.log(sigma ** 2 + 1))
    return (root - _DEIS_BETA_MIN) / _DEIS_BETA_D


@lru_cache(maxsize=4096)
def deis_coefficients(known: tuple[float, ...], sigma_next: float) -> list[float]:
    """DEIS's weights of the slopes at sigmas ``known`` (newest first; the step starts at
    ``known[0]``) for the step to ``sigma_next > 0``: the integral over variance-preserving time
    from ``known[0]`` to ``sigma_next`` of dsigma/dt times each slope's Lagrange basis polynomial,
    summed as core sums it (its points, each weighted by the step over their count)."""
    times = torch.tensor([_deis_time(v) for v in known], dtype=torch.float64)
    t_next = _deis_time(sigma_next)
    taus = torch.linspace(float(times[0]), t_next, DEIS_QUADRATURE_POINTS, dtype=torch.float64)
    alpha = torch.exp(-0.5 * taus ** 2 * _DEIS_BETA_D - taus * _DEIS_BETA_MIN)
    d_log_alpha = -(taus * _DEIS_BETA_D + _DEIS_BETA_MIN)
    dsigma_dt = -0.5 * d_log_alpha / torch.sqrt(alpha * (1 - alpha))
    dtau = (t_next - float(times[0])) / DEIS_QUADRATURE_POINTS
    weights = []
    for j in range(len(known)):
        basis = torch.ones_like(taus)
        for k in range(len(known)):
            if k != j:
                basis = basis * (taus - times[k]) / (times[j] - times[k])
        weights.append(float((dsigma_dt * basis).sum() * dtau))
    return weights


UNI_PC_LAST_SIGMA = 0.001  # core's uni_pc stops here instead of at sigma 0


@lru_cache(maxsize=4096)
def uni_pc_coefficients(known: tuple[float, ...], sigma_next: float, variant: str):
    """UniPC's numbers for the step from ``known[0]`` to ``sigma_next`` with ``len(known)`` = order
    (the sigmas of the predictions used, newest first): ``rks`` (each older prediction's distance in
    lambda = -ln sigma over the step's), the predictor's and corrector's weights ``rho_p``/``rho_c``,
    and ``B(h)`` (bh1: h, bh2: e^h - 1, with h the step in -lambda)."""
    order = len(known)
    h = math.log(known[0] / sigma_next)  # lambda_next - lambda_now
    hh = -h
    rks = [(math.log(known[0] / v)) / h for v in known[1:]]  # (lambda_i - lambda_0) / h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = {"bh1": hh, "bh2": math.expm1(hh)}[variant]
    factorial, b = 1, []
    for i in range(1, order + 1):
        b.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    powers = torch.tensor([[r ** p for r in rks + [1.0]] for p in range(order)], dtype=torch.float64)
    target = torch.tensor(b, dtype=torch.float64)
    if order == 1:
        rho_p, rho_c = [], [0.5]
    else:
        rho_p = [0.5] if order == 2 else torch.linalg.solve(powers[:-1, :-1], target[:-1]).tolist()
        rho_c = torch.linalg.solve(powers, target).tolist()
    return rks, rho_p, rho_c, b_h


__all__ = ["DEIS_QUADRATURE_POINTS", "UNI_PC_LAST_SIGMA", "deis_coefficients", "lagrange_integral",
           "uni_pc_coefficients"]
