"""How noisy each training frame is.

Two ways, matching the two ways LongVid samples:

- **Ordinary training** (:func:`sample_sigmas`): one sigma per video, shared by its frames, as an
  ordinary SVD/ExSVD sampler uses them. Either EDM's log-normal (``ln sigma ~ N(P_mean, P_std^2)``,
  Karras et al. 2022 Sec. 5) or ExVideo's grid: a uniformly chosen entry of a 1000-step Karras
  schedule over SVD's range (what ExVideo's post-tuning script draws).
- **Progressive training** (:class:`ProgressiveLevels`, PA-VDM Sec. 3.5): the per-chunk levels of
  one row of the sampler's own table (:func:`longvid_core.sampling.schedules.progressive_table`, the one
  schedule builder of the project), plus one random shift per video.

Units of the progressive shift (PA-VDM Sec. 3.5, ``delta = 0.4 * eps * (t_i - t_{i+1})``): a level is a
step index of the S-step sigma schedule the sampler runs (``schedules.py``: level 0 = sigma_max =
pure noise, level S-1 = sigma_min, the last level the model is evaluated at). ``t_i - t_{i+1}`` is
one step of that schedule, i.e. **1 level** (the released PA-VDM code uses ``T / S``, the same
thing in its units). So ``delta = shift_scale * eps`` levels, ``eps ~ N(0, 1)`` drawn once per
video and added to every frame's level; the result is clamped to ``[0, S-1]`` (the range the
sampler evaluates) and mapped to sigma by :func:`level_to_sigma`, which follows the Karras curve
between the table's integer steps (``sigma^(1/rho)`` linear in the level) and gives exactly
``get_sigmas_karras(S)[s]`` at every integer level ``s``.

Overlapped conditioning (Sec. 3.4): a row with a clean chunk gets that chunk in front, clean, at
the sampler's ``clean_sigma`` (``sigmas[S-1]``, the smallest positive sigma) and not shifted; the
trainer masks it out of the loss.

Context noise (``context_sigma`` > 0, not in PA-VDM): the clean chunk instead goes in *noised*, at a
sigma drawn per video log-uniformly in ``[clean_sigma, context_sigma]``. At sampling time the chunk
in front is the model's own output, not a real frame; a model that only ever saw real frames there
copies their flaws forward and they compound over hundreds of frames (exposure bias). Seeing the
context through noise of a known level teaches it to trust the context only as far as that level
says, and the sampler's ``context_sigma`` gives its own frames the same treatment (the noise
augmentation of GameNGen, Valevski et al. 2024 Sec. 3.2.1, and of SVD's own image condition).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid_core.sampling.schedules import (
    INITIALIZATION,
    KARRAS_RHO,
    ROLLING,
    SVD_SIGMA_MAX,
    SVD_SIGMA_MIN,
    TERMINATION,
    ProgressiveRow,
    get_sigmas_karras,
    progressive_table,
)

SIGMA_SAMPLINGS = ("lognormal", "karras1000")
EXVIDEO_GRID_STEPS = 1000  # ExVideo's training scheduler: 1000 Karras steps over SVD's range
PAVDM_SHIFT_SCALE = 0.4  # PA-VDM Sec. 3.5: delta = 0.4 * eps * (t_i - t_{i+1})


def sample_sigmas(
    batch: int,
    generator: torch.Generator,
    sampling: str = "lognormal",
    p_mean: float = 0.7,
    p_std: float = 1.6,
    sigma_min: float = SVD_SIGMA_MIN,
    sigma_max: float = SVD_SIGMA_MAX,
) -> torch.Tensor:
    """One training sigma per video, ``[batch]`` float32 on the CPU (``generator`` is a CPU generator).

    ``"lognormal"``: ``exp(p_mean + p_std * n)``, not clamped (EDM). ``"karras1000"``: a uniformly
    chosen one of the 1000 positive sigmas of ``get_sigmas_karras(1000, sigma_min, sigma_max)``.
    """
    if sampling == "lognormal":
        return torch.exp(p_mean + p_std * torch.randn(batch, generator=generator, dtype=torch.float64)).float()
    if sampling == "karras1000":
        grid = get_sigmas_karras(EXVIDEO_GRID_STEPS, sigma_min, sigma_max, dtype=torch.float64)[:-1]
        return grid[torch.randint(0, EXVIDEO_GRID_STEPS, (batch,), generator=generator)].float()
    raise ValueError(f"sigma sampling must be one of {SIGMA_SAMPLINGS}; found {sampling!r}")


def level_to_sigma(levels: torch.Tensor, sigmas: torch.Tensor, rho: float = KARRAS_RHO) -> torch.Tensor:
    """Sigma at (possibly fractional) ``levels`` of the S-step schedule ``sigmas`` (``S + 1`` values,
    last 0, as :func:`get_sigmas_karras` returns). Levels must lie in ``[0, S-1]``.

    Integer levels give ``sigmas[level]`` exactly. Between two steps ``s`` and ``s+1``,
    ``sigma^(1/rho)`` is interpolated linearly: on a Karras schedule that *is* the Karras curve
    (its Eq. 5 is linear in ``sigma^(1/rho)``), so a shifted level means "that fraction of a step"
    on the schedule the sampler walks.
    """
    steps = sigmas.shape[0] - 1
    levels = levels.to(torch.float64)
    if levels.numel() and (levels.min() < 0 or levels.max() > steps - 1):
        raise ValueError(f"levels must lie in [0, S-1] = [0, {steps - 1}]; "
                         f"found {levels.min().item()}..{levels.max().item()}")
    table = sigmas.to(torch.float64).cpu()
    lower = levels.floor().clamp(max=max(steps - 2, 0)).long()
    frac = levels - lower
    if steps == 1:
        return table[lower].to(levels.device)
    low, high = table[lower], table[lower + 1]
    between = ((1 - frac) * low ** (1 / rho) + frac * high ** (1 / rho)) ** rho
    exact_low, exact_high = frac == 0, frac == 1
    return torch.where(exact_low, low, torch.where(exact_high, high, between))


@dataclass(frozen=True)
class ProgressiveNoise:
    """Noise levels of one progressive training batch.

    The window is ``conditioning`` clean frames (0 or one chunk) followed by the noisy chunks of
    ``row`` in order. ``table_levels [B, N]``: every noisy frame's level exactly as in the row
    (each chunk's level repeated over its frames); ``shift [B]``: delta in levels; ``levels``:
    ``clamp(table_levels + shift, 0, S-1)``; ``sigma [B, conditioning + N]``: what the model gets
    (clean frames at ``clean_sigma``, or at their context sigma); ``conditioning_frames``: bool mask
    of the clean frames; ``conditioning_noised``: whether those frames go in as ``x0 + sigma * noise``
    (context noise) rather than exactly ``x0``.
    """

    row: ProgressiveRow
    table_levels: torch.Tensor
    shift: torch.Tensor
    levels: torch.Tensor
    conditioning: int
    sigma: torch.Tensor
    conditioning_frames: torch.Tensor
    conditioning_noised: bool = False

    @property
    def frames(self) -> int:
        return self.sigma.shape[1]


class ProgressiveLevels:
    """Draws PA-VDM training noise levels from the progressive sampler's own table.

    Rows come from ``progressive_table(window, chunk, steps, frames=window + chunk, clean_start=...)``:
    the table of a video one chunk longer than the window, the shortest that holds every kind of
    row the sampler runs — growing windows (initialization, Sec. 3.2), the first full window, the
    steady rolling window with its clean chunk in front (Sec. 3.4), and draining windows
    (termination). With probability ``variable_length_fraction`` a row is drawn uniformly from the
    initialization and termination rows (variable-length windows, Sec. 3.2), otherwise from the
    rolling rows. With probability ``clean_start_fraction`` the table is the one with a clean
    chunk from the first call (the sampler's "extend this video" start, ``clean_start=True``).
    One row serves a whole batch (so its videos have equal length); the shift is per video.
    ``context_sigma`` > 0: the clean chunk goes in noised (module docstring, "Context noise").
    """

    def __init__(
        self,
        window: int,
        chunk: int,
        steps: int,
        sigma_min: float = SVD_SIGMA_MIN,
        sigma_max: float = SVD_SIGMA_MAX,
        shift_scale: float = PAVDM_SHIFT_SCALE,
        variable_length_fraction: float = 0.5,
        clean_start_fraction: float = 0.0,
        context_sigma: float = 0.0,
    ):
        for name, value in (("variable_length_fraction", variable_length_fraction),
                            ("clean_start_fraction", clean_start_fraction)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1]; found {value}")
        if shift_scale < 0:
            raise ValueError(f"shift_scale must be >= 0 (0 disables the shift); found {shift_scale}")
        self.sigmas = get_sigmas_karras(steps, sigma_min, sigma_max, dtype=torch.float64)
        if context_sigma != 0.0 and not context_sigma > self.clean_sigma:
            raise ValueError(f"context_sigma must be 0 (clean context) or above the smallest sampler sigma "
                             f"{self.clean_sigma:.4g}; found {context_sigma}")
        self.context_sigma = float(context_sigma)
        self.tables = {
            clean_start: progressive_table(window, chunk, steps, frames=window + chunk, clean_start=clean_start)
            for clean_start in (False, True)
        }
        self.window, self.chunk, self.steps = window, chunk, steps
        self.shift_scale = shift_scale
        self.variable_length_fraction = variable_length_fraction
        self.clean_start_fraction = clean_start_fraction

    @property
    def max_frames(self) -> int:
        """Longest training window: the clean chunk plus a full window of noisy frames."""
        return self.chunk + self.window

    @property
    def clean_sigma(self) -> float:
        """The sigma clean conditioning frames are given at: the sampler's default ``sigmas[S-1]``."""
        return float(self.sigmas[-2])

    def rows(self, clean_start: bool = False, stages=(INITIALIZATION, ROLLING, TERMINATION)) -> list[ProgressiveRow]:
        return [row for row in self.tables[clean_start] if row.stage in stages]

    def choose_row(self, generator: torch.Generator) -> ProgressiveRow:
        clean_start = bool(torch.rand((), generator=generator, dtype=torch.float64) < self.clean_start_fraction)
        variable = bool(torch.rand((), generator=generator, dtype=torch.float64) < self.variable_length_fraction)
        rows = self.rows(clean_start, (INITIALIZATION, TERMINATION) if variable else (ROLLING,))
        if not rows:  # a window of one chunk has no initialization or termination rows
            rows = self.rows(clean_start)
        return rows[int(torch.randint(0, len(rows), (), generator=generator))]

    def levels_for_row(self, row: ProgressiveRow, batch: int, generator: torch.Generator):
        """``(table_levels [B, N], shift [B], levels [B, N])`` for ``row``: table levels repeated over
        each chunk's frames, one ``delta = shift_scale * eps`` per video, the sum clamped to [0, S-1]."""
        per_frame = [float(level) for level in row.levels for _ in range(self.chunk)]
        table_levels = torch.tensor(per_frame, dtype=torch.float64).expand(batch, -1)
        shift = self.shift_scale * torch.randn(batch, generator=generator, dtype=torch.float64)
        levels = (table_levels + shift[:, None]).clamp(0.0, float(self.steps - 1))
        return table_levels, shift, levels

    def sample(self, batch: int, generator: torch.Generator, row: ProgressiveRow | None = None) -> ProgressiveNoise:
        """Levels, sigmas and the clean-frame mask for one batch (row drawn unless given)."""
        row = self.choose_row(generator) if row is None else row
        table_levels, shift, levels = self.levels_for_row(row, batch, generator)
        conditioning = self.chunk if row.clean_chunk else 0
        noisy_sigma = level_to_sigma(levels, self.sigmas).float()
        clean = self.context_sigmas(batch, generator)[:, None].expand(batch, conditioning)
        mask = torch.zeros(batch, conditioning + levels.shape[1], dtype=torch.bool)
        mask[:, :conditioning] = True
        return ProgressiveNoise(row, table_levels, shift, levels, conditioning,
                                torch.cat([clean, noisy_sigma], dim=1), mask,
                                conditioning_noised=self.context_sigma > 0 and conditioning > 0)

    def context_sigmas(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """The clean chunk's sigma per video ``[B]`` float32: ``clean_sigma``, or with context noise
        log-uniform in ``[clean_sigma, context_sigma]`` (every scale of "how far to trust it" equally)."""
        if self.context_sigma == 0.0:
            return torch.full((batch,), self.clean_sigma, dtype=torch.float32)
        low, high = torch.tensor([self.clean_sigma, self.context_sigma], dtype=torch.float64).log()
        draw = torch.rand(batch, generator=generator, dtype=torch.float64)
        return torch.exp(low + (high - low) * draw).float()

    def window_frames(self, noise: ProgressiveNoise, clip_frames: int) -> slice:
        """Which frames of a training clip (frame 0 = the conditioning image) form the window.

        Rows without a clean chunk start a video from the image alone, so they take the clip's first
        frames; rows with a clean chunk sit later in a video (or continue a given one), so they take
        the clip's last frames, with the clean chunk in front.
        """
        if clip_frames < noise.frames:
            raise ValueError(f"a progressive window of {noise.frames} frames needs clips of at least that many "
                             f"frames; found {clip_frames}")
        return slice(0, noise.frames) if noise.conditioning == 0 else slice(clip_frames - noise.frames, clip_frames)


__all__ = [
    "SIGMA_SAMPLINGS",
    "EXVIDEO_GRID_STEPS",
    "PAVDM_SHIFT_SCALE",
    "sample_sigmas",
    "level_to_sigma",
    "ProgressiveNoise",
    "ProgressiveLevels",
]
