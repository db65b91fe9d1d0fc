"""Step rules: how one step moves the noisy frames of a call down the schedule.

A step rule knows nothing of windows or where frames sit in a video: ``step(model, x, sigma,
sigma_next, frames)`` gets the noisy frames of one call, one sigma per frame (a progressive window
holds many levels), a ``model(x, sigma) -> x0`` that runs the (guided) denoiser with the call's
context, and :class:`StepFrames`: each frame's own memory (a multistep rule's earlier predictions,
which travel with the frame as the window moves) and its noise for this step (a function of seed,
frame and schedule index only, so a stochastic rule's video does not depend on the window layout).
The rules are k-diffusion's (``sampling.py``; ComfyUI's ``comfy/k_diffusion/sampling.py``) with
sigma made a per-frame vector; a new rule is one function and one :class:`StepRule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .step_coefficients import UNI_PC_LAST_SIGMA, deis_coefficients, lagrange_integral, uni_pc_coefficients


def euler_step(x: torch.Tensor, x0: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """One Euler step of the probability-flow ODE in EDM form (Karras et al. 2022, Algorithm 1
    without churn): ``x + (x - x0) / sigma * (sigma_next - sigma)``; lands on x0 at sigma_next 0.

    ``sigma``/``sigma_next``: floats, or tensors ``[F]`` / ``[B, F]`` with one value per frame.
    """
    sigma = _broadcast_frames(sigma, x)
    sigma_next = _broadcast_frames(sigma_next, x)
    d = x - x0
    d /= sigma  # in place on the fresh difference: two window-sized buffers per step, not four
    d *= sigma_next - sigma
    return x + d


ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StepFrames:
    """The frames of one step beyond their values: ``memory`` (frame index -> a dict a rule keeps
    between that frame's steps; the walk drops it when the frame is finished), ``first_frame`` and
    ``count`` (video frames ``first_frame ..``), ``noise()``, standard normal noise ``[B, n, ...]``
    for these frames at their own schedule index, and ``steps_left`` (per frame, the steps from its
    sigma to the end of the schedule, this one included; None where unknown)."""

    def __init__(self, first_frame: int, count: int, memory: dict, noise: Callable[[], torch.Tensor],
                 steps_left: list[int] | None = None):
        self.first_frame = first_frame
        self.count = count
        self.memory = memory
        self._noise = noise
        self.steps_left = steps_left if steps_left is not None else [None] * count

    def noise(self) -> torch.Tensor:
        return self._noise()

    def recall(self, key: str) -> list:
        """Each frame's remembered ``key`` (None where it has none)."""
        return [self.memory.get(self.first_frame + i, {}).get(key) for i in range(self.count)]

    def remember(self, key: str, values) -> None:
        """Keep ``values[i]`` (a list, or a tensor ``[B, n, ...]`` split on dim 1) for frame i."""
        for i in range(self.count):
            # a copy per frame: a view would keep the whole call's tensor alive while any frame remains
            value = values[:, i].clone() if isinstance(values, torch.Tensor) else values[i]
            self.memory.setdefault(self.first_frame + i, {})[key] = value


def no_frames(x: torch.Tensor) -> StepFrames:
    """Frames with no memory kept and no noise: for deterministic single-step rules outside a walk."""
    return StepFrames(0, x.shape[1], {}, lambda: torch.zeros_like(x))


@dataclass(frozen=True)
class StepRule:
    """``step(model, x, sigma, sigma_next, frames) -> x_next`` for noisy frames ``x[B, n, ...]`` at
    per-frame ``sigma[n]``. ``model_calls``: calls per step; ``final_calls``: calls of a step that
    takes every frame of the call to sigma 0 (a two-stage rule makes one there, as k-diffusion's do);
    the plans count both."""

    name: str
    step: Callable[..., torch.Tensor]
    model_calls: int = 1
    final_calls: int | None = None

    def calls(self, to_zero: bool) -> int:
        return self.model_calls if not to_zero or self.final_calls is None else self.final_calls


# ------------------------------------------------------------------------------- the rules


def _euler(model: ModelFn, x, sigma, sigma_next, frames=None):
    return euler_step(x, model(x, sigma), sigma, sigma_next)


def _euler_ancestral(model: ModelFn, x, sigma, sigma_next, frames: StepFrames, eta: float = 1.0):
    # k-diffusion sample_euler_ancestral: Euler down to sigma_down, then fresh noise up to sigma_next
    x0 = model(x, sigma)
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    x = euler_step(x, x0, sigma, sigma_down)
    return x + frames.noise() * _broadcast_frames(sigma_up, x)


def _heun(model: ModelFn, x, sigma, sigma_next, frames=None):
    # Karras et al. 2022, Algorithm 1 (no churn): Euler, then the trapezoid of the two slopes;
    # a frame stepping to sigma 0 takes the Euler step (its second prediction is discarded)
    x0 = model(x, sigma)
    d = _slope(x, x0, sigma)
    dt = _broadcast_frames(sigma_next - sigma, x)
    euler = x + d * dt
    if not bool((sigma_next > 0).any()):
        return euler
    alive = sigma_next > 0
    at = torch.where(alive, sigma_next, sigma)  # the model never sees sigma 0
    x_2 = torch.where(_broadcast_frames(alive, x), euler, x)
    d_2 = _slope(x_2, model(x_2, at), at)
    return torch.where(_broadcast_frames(alive, x), x + (d + d_2) / 2 * dt, euler)


def _dpm_2(model: ModelFn, x, sigma, sigma_next, frames=None):
    # k-diffusion sample_dpm_2 (Karras et al. 2022, "DPM-Solver-2"): midpoint in log sigma
    x0 = model(x, sigma)
    d = _slope(x, x0, sigma)
    euler = x + d * _broadcast_frames(sigma_next - sigma, x)
    if not bool((sigma_next > 0).any()):
        return euler
    alive = sigma_next > 0
    mid = torch.where(alive, sigma.log().lerp(sigma_next.clamp_min(1e-30).log(), 0.5).exp(), sigma)
    x_2 = x + d * _broadcast_frames(mid - sigma, x)
    d_2 = _slope(x_2, model(x_2, mid), mid)
    return torch.where(_broadcast_frames(alive, x), x + d_2 * _broadcast_frames(sigma_next - sigma, x), euler)


def _dpmpp_2m(model: ModelFn, x, sigma, sigma_next, frames: StepFrames):
    # k-diffusion sample_dpmpp_2m (Lu et al. 2022, DPM-Solver++(2M)) in t = -ln(sigma), with each
    # frame's own previous prediction and sigma; first order on a frame's first step and to sigma 0
    x0 = model(x, sigma)
    previous_x0, previous_sigma = frames.recall("x0"), frames.recall("sigma")
    frames.remember("x0", x0)
    frames.remember("sigma", sigma.tolist())
    alive = sigma_next > 0
    t = -sigma.log()
    t_next = torch.where(alive, -sigma_next.clamp_min(1e-30).log(), t + 1)  # any finite h: unused below
    h = t_next - t
    has_history = torch.tensor([p is not None for p in previous_sigma], device=sigma.device) & alive
    denoised = x0
    if bool(has_history.any()):
        old = _stacked(previous_x0, x0)
        t_prev = -torch.tensor([p if p is not None else 1.0 for p in previous_sigma], dtype=sigma.dtype,
                               device=sigma.device).log()
        r = torch.where(has_history, (t - t_prev) / h, torch.ones_like(h))
        second = (1 + 1 / (2 * r))[None, :, None, None, None].to(x0.dtype) * x0 - (
            1 / (2 * r))[None, :, None, None, None].to(x0.dtype) * old
        denoised = torch.where(_broadcast_frames(has_history, x0), second, x0)
    ratio = torch.where(alive, sigma_next / sigma, torch.zeros_like(sigma))
    weight = torch.where(alive, -torch.expm1(-h), torch.ones_like(h))
    return _broadcast_frames(ratio, x) * x + _broadcast_frames(weight, x) * denoised


def _dpmpp_2m_sde(model: ModelFn, x, sigma, sigma_next, frames: StepFrames, eta: float = 1.0):
    # k-diffusion sample_dpmpp_2m_sde (midpoint), per frame: the previous prediction and step size
    # h are the frame's own; the noise is the frame's own for this step
    x0 = model(x, sigma)
    previous_x0, previous_h = frames.recall("x0"), frames.recall("h")
    alive = sigma_next > 0
    safe_next = torch.where(alive, sigma_next, sigma)
    h = torch.where(alive, sigma.log() - safe_next.log(), torch.zeros_like(sigma))
    eta_h = eta * h
    out = _broadcast_frames(safe_next / sigma * (-eta_h).exp(), x) * x + _broadcast_frames(
        (-h - eta_h).expm1().neg(), x) * x0
    has_history = torch.tensor([p is not None for p in previous_h], device=sigma.device) & alive
    if bool(has_history.any()):
        old = _stacked(previous_x0, x0)
        h_last = torch.tensor([p if p is not None else 1.0 for p in previous_h], dtype=sigma.dtype, device=sigma.device)
        scale = torch.where(has_history, 0.5 * (-h - eta_h).expm1().neg() * h / h_last, torch.zeros_like(h))
        out = out + _broadcast_frames(scale, x) * (x0 - old)
    if eta:
        noise_scale = torch.where(alive, safe_next * (-2 * eta_h).expm1().neg().sqrt(), torch.zeros_like(h))
        out = out + frames.noise() * _broadcast_frames(noise_scale, x)
    frames.remember("x0", x0)
    frames.remember("h", [hv if a else p for hv, a, p in zip(h.tolist(), alive.tolist(), previous_h)])
    return torch.where(_broadcast_frames(alive, x), out, x0)


def _dpmpp_3m_sde(model: ModelFn, x, sigma, sigma_next, frames: StepFrames, eta: float = 1.0):
    # k-diffusion sample_dpmpp_3m_sde, per frame: the frame's last two predictions and step sizes
    x0 = model(x, sigma)
    x0_1, x0_2 = frames.recall("x0"), frames.recall("x0_1")
    h_1, h_2 = frames.recall("h"), frames.recall("h_1")
    alive = sigma_next > 0
    safe_next = torch.where(alive, sigma_next, sigma)
    h = torch.where(alive, sigma.log() - safe_next.log(), torch.ones_like(sigma))
    h_eta = h * (eta + 1)
    out = _broadcast_frames((-h_eta).exp(), x) * x + _broadcast_frames((-h_eta).expm1().neg(), x) * x0
    phi_2 = (-h_eta).expm1() / h_eta + 1
    phi_3 = phi_2 / h_eta - 0.5
    two = torch.tensor([p is not None for p in h_2], device=sigma.device) & alive
    one = torch.tensor([p is not None for p in h_1], device=sigma.device) & alive & ~two
    if bool(two.any() or one.any()):
        d_1, d_2 = _stacked(x0_1, x0), _stacked(x0_2, x0)
        r0 = torch.tensor([p if p is not None else 1.0 for p in h_1], dtype=h.dtype, device=h.device) / h
        r1 = torch.tensor([p if p is not None else 1.0 for p in h_2], dtype=h.dtype, device=h.device) / h
        d1_0 = (x0 - d_1) / _broadcast_frames(r0, x)
        d1_1 = (d_1 - d_2) / _broadcast_frames(r1, x)
        d1 = d1_0 + (d1_0 - d1_1) * _broadcast_frames(r0 / (r0 + r1), x)
        d2 = (d1_0 - d1_1) / _broadcast_frames(r0 + r1, x)
        third = out + _broadcast_frames(phi_2, x) * d1 - _broadcast_frames(phi_3, x) * d2
        second = out + _broadcast_frames(phi_2, x) * d1_0
        out = torch.where(_broadcast_frames(two, x), third, torch.where(_broadcast_frames(one, x), second, out))
    if eta:
        noise_scale = torch.where(alive, safe_next * (-2 * h * eta).expm1().neg().sqrt(), torch.zeros_like(h))
        out = out + frames.noise() * _broadcast_frames(noise_scale, x)
    frames.remember("x0_1", [p.clone() if p is not None else None for p in x0_1])
    frames.remember("x0", x0)
    frames.remember("h_1", h_1)
    frames.remember("h", h.tolist())
    return torch.where(_broadcast_frames(alive, x), out, x0)


def _lms(model: ModelFn, x, sigma, sigma_next, frames: StepFrames, order: int = 4):
    # k-diffusion sample_lms: Adams-Bashforth in sigma with each frame's own earlier slopes and
    # sigmas; the Lagrange basis integrated exactly (k-diffusion integrates it numerically)
    x0 = model(x, sigma)
    d = _slope(x, x0, sigma)
    slopes, sigmas = frames.recall("slopes"), frames.recall("sigmas")
    out = torch.empty_like(x)
    kept_slopes, kept_sigmas = [], []
    for i in range(x.shape[1]):
        history = (slopes[i] or []) + [d[:, i]]
        times = (sigmas[i] or []) + [float(sigma[i])]
        history, times = history[-order:], times[-order:]
        coefficients = [lagrange_integral(times[::-1], j, float(sigma[i]), float(sigma_next[i]))
                        for j in range(len(times))]
        out[:, i] = x[:, i] + sum(c * slope for c, slope in zip(coefficients, history[::-1]))
        kept_slopes.append([s.clone() for s in history[-(order - 1):]] if order > 1 else [])
        kept_sigmas.append(times[-(order - 1):] if order > 1 else [])
    frames.remember("slopes", kept_slopes)
    frames.remember("sigmas", kept_sigmas)
    return out


def _ipndm(model: ModelFn, x, sigma, sigma_next, frames: StepFrames, max_order: int = 4):
    # improved PNDM (Zhang & Chen 2023, DEIS Sec. 4; core's sample_ipndm): Adams-Bashforth on the
    # slope with each frame's own earlier slopes, up to fourth order; the last step lands on x0
    x0 = model(x, sigma)
    d = _slope(x, x0, sigma)
    previous = frames.recall("slopes")
    out = torch.empty_like(x)
    kept = []
    weights = {1: (1,), 2: (3 / 2, -1 / 2), 3: (23 / 12, -16 / 12, 5 / 12), 4: (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
    for i in range(x.shape[1]):
        history = previous[i] or []
        if float(sigma_next[i]) == 0:
            out[:, i] = x0[:, i]
        else:
            order = min(max_order, len(history) + 1)
            slope = sum(w * s for w, s in zip(weights[order], [d[:, i]] + history[::-1][:order - 1]))
            out[:, i] = x[:, i] + (float(sigma_next[i]) - float(sigma[i])) * slope
        kept.append((history + [d[:, i].clone()])[-(max_order - 1):])
    frames.remember("slopes", kept)
    return out


def _deis(model: ModelFn, x, sigma, sigma_next, frames: StepFrames, max_order: int = 3):
    # DEIS (Zhang & Chen 2023, "tab" variant; core's sample_deis, max order 3): the slope is
    # extrapolated by a polynomial in variance-preserving time t over the frame's own earlier
    # slopes, and integrated against dsigma/dt; a frame's first step and a step to sigma 0 are Euler
    x0 = model(x, sigma)
    d = _slope(x, x0, sigma)
    previous, previous_sigma = frames.recall("slopes"), frames.recall("sigmas")
    out = torch.empty_like(x)
    kept, kept_sigma = [], []
    for i in range(x.shape[1]):
        history, times = previous[i] or [], previous_sigma[i] or []
        s, s_next = float(sigma[i]), float(sigma_next[i])
        order = 1 if s_next <= 0 else min(max_order, len(history) + 1)
        if order == 1:
            out[:, i] = x[:, i] + (s_next - s) * d[:, i]
        else:
            known = (s, *times[::-1][:order - 1])  # newest first, as the slopes below
            coefficients = deis_coefficients(known, s_next)
            out[:, i] = x[:, i] + sum(c * slope for c, slope in zip(coefficients, [d[:, i]] + history[::-1]))
        kept.append((history + [d[:, i].clone()])[-(max_order - 1):])
        kept_sigma.append((times + [s])[-(max_order - 1):])
    frames.remember("slopes", kept)
    frames.remember("sigmas", kept_sigma)
    return out


def _uni_pc(model: ModelFn, x, sigma, sigma_next, frames: StepFrames, variant: str = "bh1", max_order: int = 3):
    # UniPC (Zhao et al., NeurIPS 2023; core's uni_pc = variant bh1, uni_pc_bh2 = bh2): data
    # prediction, multistep, order up to 3, lower orders on a frame's first and last two steps. A
    # step's corrector needs the model at the step's end, so it is applied here, at the call that
    # makes that prediction, before this step's predictor: still one call per step. Written in
    # sigma-space x (core runs it in variance-preserving x; the same numbers). A step to sigma 0
    # ends at sigma 0.001, as core's does.
    x0 = model(x, sigma)
    models, sigmas = frames.recall("x0"), frames.recall("sigmas")
    out = torch.empty_like(x)
    kept, kept_sigma = [], []
    for i in range(x.shape[1]):
        past, times = (models[i] or [])[::-1], (sigmas[i] or [])[::-1]  # newest first
        s, s_next, left = float(sigma[i]), float(sigma_next[i]), frames.steps_left[i]
        x_i = x[:, i]
        if past:  # correct the step that brought the frame here, from past[0]'s sigma to s
            order = min(len(past), max_order, left + 1 if left is not None else max_order)
            rks, rho_p, rho_c, b_h = uni_pc_coefficients(tuple(times[:order]), s, variant)
            d1 = [(m - past[0]) / rk for m, rk in zip(past[1:order], rks)]
            predicted = sum(r * d for r, d in zip(rho_p, d1))
            corrected = sum(r * d for r, d in zip(rho_c[:-1], d1))
            x_i = x_i + b_h * (predicted - corrected - rho_c[-1] * (x0[:, i] - past[0]))
        order = 1 if s_next <= 0 else min(len(past) + 1, max_order, left if left is not None else max_order)
        target = s_next if s_next > 0 else UNI_PC_LAST_SIGMA
        ratio = target / s
        step = ratio * x_i + (1 - ratio) * x0[:, i]
        if order > 1:
            rks, rho_p, _, b_h = uni_pc_coefficients((s, *times[:order - 1]), target, variant)
            step = step - b_h * sum(r * (m - x0[:, i]) / rk for r, rk, m in zip(rho_p, rks, past))
        out[:, i] = step
        kept.append((past[:max_order - 1][::-1]) + [x0[:, i].clone()])
        kept_sigma.append(times[:max_order - 1][::-1] + [s])
    frames.remember("x0", kept)
    frames.remember("sigmas", kept_sigma)
    return out


def _lcm(model: ModelFn, x, sigma, sigma_next, frames: StepFrames):
    # Latent Consistency Models (Luo et al. 2023), as core's sample_lcm: jump to the prediction, then
    # noise it to the next level (EDM's noise scaling: x0 + sigma * noise)
    x0 = model(x, sigma)
    return x0 + _broadcast_frames(sigma_next, x) * frames.noise()


EULER = StepRule("euler", _euler)
STEP_RULES = {
    "euler": EULER,
    "euler_ancestral": StepRule("euler_ancestral", _euler_ancestral),
    "heun": StepRule("heun", _heun, model_calls=2, final_calls=1),
    "dpm_2": StepRule("dpm_2", _dpm_2, model_calls=2, final_calls=1),
    "dpmpp_2m": StepRule("dpmpp_2m", _dpmpp_2m),
    "dpmpp_2m_sde": StepRule("dpmpp_2m_sde", _dpmpp_2m_sde),
    "dpmpp_3m_sde": StepRule("dpmpp_3m_sde", _dpmpp_3m_sde),
    "lms": StepRule("lms", _lms),
    "ipndm": StepRule("ipndm", _ipndm),
    "lcm": StepRule("lcm", _lcm),
    "ddim": StepRule("ddim", _euler),  # core's ddim sampler is its Euler sampler
    "deis": StepRule("deis", _deis),
    "uni_pc": StepRule("uni_pc", _uni_pc),
    "uni_pc_bh2": StepRule("uni_pc_bh2", partial(_uni_pc, variant="bh2")),
}


# ------------------------------------------------------------------------------- helpers


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0):
    """k-diffusion's get_ancestral_step per frame: the sigma to step down to, and the noise to add
    back up to ``sigma_next``."""
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    up = torch.minimum(sigma_next, eta * (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5)
    return (sigma_next ** 2 - up ** 2) ** 0.5, up


def _stacked(values: list, like: torch.Tensor) -> torch.Tensor:
    """Per-frame remembered tensors ``[B, ...]`` stacked on dim 1 (zeros where a frame has none)."""
    return torch.stack([v if v is not None else torch.zeros_like(like[:, 0]) for v in values], dim=1)


def _slope(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return (x - x0) / _broadcast_frames(sigma, x)


def _broadcast_frames(sigma, x: torch.Tensor):
    if not isinstance(sigma, torch.Tensor) or sigma.dim() == 0:
        return sigma
    sigma = sigma.to(device=x.device, dtype=x.dtype if sigma.dtype != torch.bool else torch.bool)
    if sigma.dim() == 1:
        sigma = sigma[None]
    return sigma[:, :, None, None, None]


__all__ = ["EULER", "STEP_RULES", "ModelFn", "StepFrames", "StepRule", "ancestral_step", "euler_step", "no_frames"]
