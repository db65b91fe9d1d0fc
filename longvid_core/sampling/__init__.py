"""Sampling: schedules, one file per sampling method, the window walk they share, step rules,
guidance, guide frames, keyframe conditioning and step caching — pure functions over the denoiser contract
``denoise(x[B,F,4,h,w], sigma[B,F], cond) -> x0`` (k-diffusion's manner).

May import: the shared words (``longvid_core.problems``, ``.shapes``, ``.progress``) and
``longvid_core.networks`` (SVDCond, the denoiser a cache wraps). Never weights, evaluation or run.
A new method is a file beside ``progressive.py`` walking a :class:`~.walk.Walk`; a new step rule is
a function in ``step_rules.py``. This package re-exports every method's public names.
"""

from .context_windows import (context_windows, iter_context_windows, plan_context_windows, pyramid_weights,
                              sample_context_windows)
from .full_sequence import iter_full_sequence, plan_full_sequence, sample_full_sequence
from .guidance import DEFAULT_CFG, DEFAULT_MIN_CFG, Denoiser, guided_denoise, linear_cfg_ramp
from .guides import Guide, guides_problem
from .keyframes import CondOverTime, Keyframes
from .noise import frame_noise
from .progressive import iter_progressive, plan_progressive, sample_progressive
from .replacement import (DEFAULT_CONDITION_FRAMES, DEFAULT_REPLACEMENT_WINDOW, iter_replacement, plan_replacement,
                          sample_replacement)
from .step_rules import EULER, StepRule, euler_step
from .walk import SamplingPlan, collect_frames

__all__ = [
    "DEFAULT_CFG", "DEFAULT_CONDITION_FRAMES", "DEFAULT_MIN_CFG", "DEFAULT_REPLACEMENT_WINDOW", "EULER",
    "CondOverTime", "Denoiser", "Guide", "Keyframes", "SamplingPlan", "StepRule", "collect_frames",
    "context_windows", "euler_step", "frame_noise", "guided_denoise", "guides_problem",
    "iter_context_windows", "iter_full_sequence", "iter_progressive", "iter_replacement", "linear_cfg_ramp",
    "plan_context_windows", "plan_full_sequence", "plan_progressive", "plan_replacement", "pyramid_weights",
    "sample_context_windows", "sample_full_sequence", "sample_progressive", "sample_replacement",
]
