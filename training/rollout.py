"""Rollout batches: the progressive loss asked after the model has run the sampler itself.

Ordinary progressive training (``noise_levels.ProgressiveLevels``) builds every window from true
frames: the clean chunk in front is a real frame and each noisy chunk is a real frame plus fresh
noise. At sampling time neither holds: the clean chunk is the model's own output, and each noisy
chunk is the state its own earlier calls left (PA-VDM Sec. 3.1-3.4; every call lowers every frame
one level). Whatever the model gets slightly wrong in one window is the next window's context, and
over hundreds of frames those errors compound (exposure bias) — the loss never sees them.

A rollout batch puts them in front of the loss. Start at the first rolling row of the sampler's own
table (``progressive_table``, the one schedule builder) with a clean chunk in front: the clip's
first chunk clean, every later chunk its true frames noised to the row's level. Run the sampler's
calls of the following ``periods * d`` rows without gradients (``d`` = calls per period, one chunk
finished per period), exactly as ``sampling.iter_progressive`` runs them: context at
``clean_sigma``, one Euler step per call, a finished chunk becomes the next context. Then take
the ordinary EDM loss of the next row's call on that state against the **true** frames of its
chunks: the model learns to pull its own trajectories back to the data behind a context it made.
Levels are the table's integer levels (no PA-VDM shift: this is the sampler's path, not a draw
around it). Which rows, clips and noise are used is fixed by the step's generator, so a resumed run
replays the same batches.

This is not in PA-VDM; it is the multi-step "rollout" training of autoregressive models (scheduled
sampling, Bengio et al. 2015; the sampled-context training of long video world models).
"""

from __future__ import annotations

import torch

from longvid_core.networks.losses import DenoisingLoss, weighted_x0_loss
from longvid_core.sampling import euler_step
from longvid_core.sampling.schedules import ROLLING


def rollout_rows(progressive, periods: int):
    """``(run, loss_row)``: the sampler rows to run without gradients and the row whose call is trained.

    Rows of ``progressive``'s table without a clean start (a video one chunk longer than the
    window): from the first rolling row with a clean chunk in front, ``periods`` periods of ``d``
    calls each, then the next row. ``periods`` must leave a noisy chunk for the loss:
    ``1 <= periods <= window / chunk - 1``.
    """
    table = progressive.tables[False]
    most = table.chunks_per_window - 1
    if not 1 <= periods <= most:
        raise ValueError(f"rollout periods must be in [1, {most}] for window {table.window}, chunk {table.chunk} "
                         f"(one noisy chunk must be left for the loss); found {periods}")
    rows = list(table)
    first = next(i for i, row in enumerate(rows) if row.stage == ROLLING and row.clean_chunk)
    end = first + periods * table.chunk_spacing
    return rows[first:end], rows[end]


def _row_sigmas(table, row, sigmas: torch.Tensor, offset: int) -> list[float]:
    """Per noisy frame of ``row``: ``sigmas[level + offset]`` (offset 1: the level after the call)."""
    return [float(sigmas[level + offset]) for m, level in zip(row.chunks, row.levels)
            for _ in table.chunk_frames(m)]


def rollout_state(denoise, latents: torch.Tensor, cond, progressive, periods: int,
                  noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, object]:
    """Run the sampler from noised true frames; returns ``(context, noisy, loss_row)``.

    ``latents [B, C + F, 4, h, w]``: a clip as long as the trained window plus its clean chunk
    (frame ``i`` = frame ``i`` of the table's video). ``noise``: standard normal, same shape; the
    start noises chunk ``m`` of the first row as ``x0 + sigmas[level] * noise`` (chunk 0 stays
    clean). ``context``: the clean chunk in front of ``loss_row`` (the model's own finished chunk);
    ``noisy``: the state of ``loss_row``'s chunks, at its levels. Runs under ``torch.no_grad``.
    """
    table = progressive.tables[False]
    if latents.shape[1] != table.chunk + table.window:
        raise ValueError(f"a rollout needs clips of chunk + window = {table.chunk + table.window} frames; "
                         f"found {latents.shape[1]}")
    if noise.shape != latents.shape:
        raise ValueError(f"noise: expected the shape of the latents {tuple(latents.shape)}; found {tuple(noise.shape)}")
    run, loss_row = rollout_rows(progressive, periods)
    sigmas = progressive.sigmas
    clean_sigma = progressive.clean_sigma
    batch = latents.shape[0]
    start = run[0]
    frames = [i for m in start.chunks for i in table.chunk_frames(m)]
    context = latents[:, table.chunk_frames(start.first_chunk - 1)]
    start_sigma = torch.tensor(_row_sigmas(table, start, sigmas, 0), dtype=latents.dtype, device=latents.device)
    noisy = latents[:, frames] + start_sigma[None, :, None, None, None] * noise[:, frames]
    with torch.no_grad():
        for row in run:
            now, after = _row_sigmas(table, row, sigmas, 0), _row_sigmas(table, row, sigmas, 1)
            x = torch.cat([context, noisy], dim=1)
            sigma = torch.tensor([clean_sigma] * context.shape[1] + now, dtype=torch.float32,
                                 device=latents.device).expand(batch, -1)
            x0 = denoise(x, sigma, cond).to(noisy.dtype)
            noisy = euler_step(noisy, x0[:, context.shape[1]:], torch.tensor(now, dtype=torch.float64),
                               torch.tensor(after, dtype=torch.float64))
            if row.emits:  # the front chunk reached sigma 0: it is the next context (Sec. 3.4)
                size = len(table.chunk_frames(row.first_chunk))
                context, noisy = noisy[:, :size], noisy[:, size:]
    return context, noisy, loss_row


def rollout_loss(denoise, latents: torch.Tensor, cond, progressive, periods: int, noise: torch.Tensor,
                 weighting: str = "edm") -> DenoisingLoss:
    """The EDM loss of ``loss_row``'s call on the rolled-out state, against the true frames.

    Only this call carries gradients; the context frames do not count (as in ordinary progressive
    training), and each noisy frame is weighted at its row level's sigma.
    """
    table = progressive.tables[False]
    context, noisy, row = rollout_state(denoise, latents, cond, progressive, periods, noise)
    frames = [i for m in row.chunks for i in table.chunk_frames(m)]
    now = _row_sigmas(table, row, progressive.sigmas, 0)
    batch, size = latents.shape[0], context.shape[1]
    sigma = torch.tensor([progressive.clean_sigma] * size + now, dtype=torch.float32,
                         device=latents.device).expand(batch, -1)
    target = torch.cat([latents[:, table.chunk_frames(row.first_chunk - 1)], latents[:, frames]], dim=1)
    counted = torch.ones(batch, target.shape[1], dtype=torch.bool, device=latents.device)
    counted[:, :size] = False
    denoised = denoise(torch.cat([context, noisy], dim=1), sigma, cond)  # the state carries no gradients
    return weighted_x0_loss(denoised, target, sigma, counted, weighting)


__all__ = ["rollout_rows", "rollout_state", "rollout_loss"]
