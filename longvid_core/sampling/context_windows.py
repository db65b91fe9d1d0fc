"""Context windows, as ComfyUI core runs SVD on long clips (Context Windows (Manual)): all
frames at one sigma, each step's prediction made window by window and fused with pyramid weights."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..progress import ProgressCallback
from .guidance import DEFAULT_CFG, DEFAULT_MIN_CFG, Denoiser, linear_cfg_ramp
from .guides import Guide, held_steps, hold_steps
from .keyframes import CondOverTime
from .noise import frame_noise
from .schedule_samplers import ScheduleSampler, run_schedule
from .schedules import DEFAULT_STEPS
from .step_rules import EULER, StepRule
from .walk import CallProgress, PlanCount, SamplingPlan, Walk, collect_frames, count_new_frames


def context_windows(num_frames: int, length: int, overlap: int) -> list[range]:
    """ComfyUI's ``standard_static`` windows: ``length`` frames every ``length - overlap``, the last
    one moved back to end at the last frame; one window when the video is no longer than that."""
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"context window length must be a whole number of frames >= 1; got {length!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < length:
        raise ValueError(f"context overlap must be between 0 and the window length - 1 = {length - 1} frames; "
                         f"got {overlap!r}")
    if num_frames <= length:
        return [range(num_frames)]
    windows = []
    for start in range(0, num_frames, length - overlap):
        if start + length >= num_frames:
            windows.append(range(num_frames - length, num_frames))
            break
        windows.append(range(start, start + length))
    return windows


def pyramid_weights(length: int) -> list[float]:
    """ComfyUI's default fuse weights: 1, 2, ... up to the middle of the window and back down."""
    half = (length + 1) // 2
    rising = list(range(1, half + 1))
    return [float(w) for w in rising + rising[::-1][length % 2:]]


def plan_context_windows(num_frames: int, *, length: int, overlap: int, steps: int = DEFAULT_STEPS,
                         guides: Sequence[Guide] = (), step_rule: StepRule = EULER) -> SamplingPlan:
    """Cost of :func:`iter_context_windows`: one call per window per step, but for the steps where
    the guides hold every frame of the window."""
    new_frames = count_new_frames(num_frames, 0)
    hold = hold_steps(guides, steps)
    count = PlanCount(step_rule, steps)
    for window in context_windows(num_frames, length, overlap):
        count.window(len(window), steps - held_steps(hold, window))
    return count.plan(new_frames, steps)


def iter_context_windows(
    denoise: Denoiser,
    cond: CondOverTime,
    num_frames: int,
    frame_shape: Sequence[int],
    sigmas: torch.Tensor | None = None,
    *,
    length: int,
    overlap: int,
    seed: int = 0,
    cfg: float = DEFAULT_CFG,
    min_cfg: float = DEFAULT_MIN_CFG,
    guides: Sequence[Guide] = (),
    callback: ProgressCallback | None = None,
    step_rule: StepRule = EULER,
    dtype: torch.dtype | None = None,
    device=None,
    state_device=None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """All N frames at one noise level, each step's prediction made window by window
    (:func:`context_windows`) and fused with :func:`pyramid_weights`: what a user of core ComfyUI
    gets from SVD with Context Windows (Manual) at its defaults. Every window sees the full
    schedule; guidance ramps over the whole video (VideoLinearCFGGuidance on the full batch).

    The method holds all N frames until the last step. They live on ``state_device`` (default: host
    memory) and only one window at a time goes to ``device``, so device memory does not grow with
    the video; host memory holds about three latents per frame. Frames are yielded after the last
    step, on ``state_device``.

    ``guides``: :class:`~.guides.Guide` frames the video passes through (strength 1) or is pulled
    toward (below 1), held at every step (:mod:`.guides`)."""
    walk = Walk.start(denoise, cond, frame_shape, sigmas, seed, dtype, device, None, step_rule)
    walk.hold_guides(guides, num_frames, walk_kind="context_windows")
    plan = plan_context_windows(num_frames, length=length, overlap=overlap, steps=walk.steps, guides=guides,
                                step_rule=step_rule)
    walk.progress = CallProgress(callback, plan.denoiser_calls, plan.new_frames)
    store = _VideoAtOneSigma(walk, num_frames, context_windows(num_frames, length, overlap),
                             linear_cfg_ramp(num_frames, min_cfg, cfg), state_device)
    return _context_window_frames(walk, store)


class _VideoAtOneSigma:
    """What context windows hold for the whole video, on ``device`` (default: host memory): the
    frames, the windows, their fuse weights and the guidance per frame. Everything else a call
    needs is one window."""

    def __init__(self, walk: "Walk", num_frames: int, windows: list[range], scales: torch.Tensor, device=None):
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.num_frames = num_frames
        self.windows = windows
        self.active = [True] * len(windows)  # per window, called this step (not when the guides hold it all)
        self.scales = scales if bool((scales != 1.0).any()) else None  # float64, CPU, as guided_denoise takes it
        self.weights = [torch.tensor(pyramid_weights(len(w)), dtype=walk.dtype, device=self.device) for w in windows]
        self.sigma_dtype = walk.sigmas.dtype
        # frame by frame: frame_noise draws on the CPU, so the numbers are the same on any device
        self.frames = walk.held.apply(walk.levels[0] * torch.stack(
            [frame_noise(walk.seed, k, walk.frame_shape, dtype=walk.dtype, device=self.device)
             for k in range(num_frames)], dim=1), 0, walk.levels[0])

    def sigma(self, value: float) -> torch.Tensor:
        return torch.full((self.num_frames,), value, dtype=self.sigma_dtype, device=self.device)


def _context_window_frames(walk: "Walk", store: _VideoAtOneSigma):
    batch = walk.frame_shape[0]

    def fused(x: torch.Tensor, x_sigma: torch.Tensor) -> torch.Tensor:
        x0 = torch.zeros_like(x)
        total = torch.zeros(store.num_frames, dtype=x.dtype, device=x.device)
        for window, weight, active in zip(store.windows, store.weights, store.active):
            if not active:
                continue
            part = slice(window.start, window.stop)
            window_sigma = x_sigma[part].to(walk.sigmas.device).expand(batch, -1).contiguous()
            prediction = walk.call(x[:, part].to(walk.device), window_sigma,
                                   walk.conds.for_frames(window.start, len(window)),
                                   None if store.scales is None else store.scales[part], window.start)
            x0[:, part] += prediction.to(x.device) * weight[None, :, None, None, None]
            total[part] += weight
            del prediction, window_sigma  # one window on the model's device at a time
        # frames of skipped windows only have weight 0: they are held, so any finite value will do
        return x0 / total.clamp_min(1.0)[None, :, None, None, None]

    if isinstance(walk.step_rule, ScheduleSampler):  # a function that walks the schedule itself
        store.frames = run_schedule(walk, walk.step_rule, store.frames, 0, fused,
                                    walk.sigmas.to(store.device))
        yield from walk.hand_out((0, store.frames.clone()))
        return
    for i in range(walk.steps):
        store.active = [not walk.held.holds_all(w.start, len(w), walk.levels[i + 1]) for w in store.windows]
        # no local name for the stepped video: the store holds the only reference
        if any(store.active):
            store.frames = walk.step_rule.step(fused, store.frames, store.sigma(walk.levels[i]),
                                               store.sigma(walk.levels[i + 1]),
                                               walk.step_frames(0, [walk.levels[i]] * store.num_frames, store.device))
        store.frames = walk.hold(store.frames, 0, walk.levels[i + 1])
        yield from walk.hand_out((0, store.frames.clone()) if i == walk.steps - 1 else None)


def sample_context_windows(denoise: Denoiser, cond: CondOverTime, num_frames: int, frame_shape: Sequence[int],
                           sigmas: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
    """:func:`iter_context_windows` collected into ``[B, N, 4, h, w]``."""
    return collect_frames(iter_context_windows(denoise, cond, num_frames, frame_shape, sigmas, **kwargs), num_frames)


__all__ = ["context_windows", "iter_context_windows", "plan_context_windows", "pyramid_weights",
           "sample_context_windows"]
