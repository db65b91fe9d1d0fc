"""The run's modes and hard limits, with no import beyond the standard library: the command
line's ``--help`` and argument checks need them before torch loads (:mod:`.settings` holds the
rest of a run's settings and re-exports these)."""

AUTO = "auto"
PROGRESSIVE = "progressive"
CONTEXT_WINDOWS = "context_windows"
FULL_SEQUENCE = "full_sequence"
REPLACEMENT_WITHOUT_NOISE = "replacement_without_noise"
REPLACEMENT_WITH_NOISE = "replacement_with_noise"
MODES = (AUTO, PROGRESSIVE, CONTEXT_WINDOWS, FULL_SEQUENCE, REPLACEMENT_WITHOUT_NOISE, REPLACEMENT_WITH_NOISE)
# Training-free settings for weights trained with one noise level per clip, as changes to the given
# settings. The partitioned ones are FIFO-Diffusion's (Kim et al. 2024, Sec. 4) in LongVid's terms:
# the window is doubled so that one call still holds about the given window's frames, in P=2
# partitions, or in P=4 quarters that each also see the quarter ahead.
TRAINING_FREE_OPTIONS = {
    "progressive": dict(mode=PROGRESSIVE),
    "partitioned": dict(mode=PROGRESSIVE, window_multiple=2, partitions=2),
    "partitioned_lookahead": dict(mode=PROGRESSIVE, window_multiple=2, partitions=4, lookahead=True),
    "context_windows": dict(mode=CONTEXT_WINDOWS),
    "replacement_with_noise": dict(mode=REPLACEMENT_WITH_NOISE),
}
# What `auto` runs on weights without a progressive fine-tuning record (SVD, SVD-XT, SVD-XT 1.1, the
# ExVideo release): the best of TRAINING_FREE_OPTIONS for the one-level model in bench_quality.py.
TRAINING_FREE = "replacement_with_noise"

# How a strength-1 guide steers the frames around it (sampling/guides.py says how each works):
# hold, clean, time_reversal; auto picks per mode what bench/bench_guides.py measured better.
GUIDE_METHODS = (AUTO, "hold", "clean", "time_reversal")

# Samplers (step rules, sampling/step_rules.py) by ComfyUI's names; euler is LongVid's rule from
# before they had names.
SAMPLER_NAMES = ("euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "lms", "ipndm",
                 "lcm", "ddim", "deis", "uni_pc", "uni_pc_bh2")
DEFAULT_SAMPLER = "euler"
# Sigma schedulers by ComfyUI's names (core's order), then Align Your Steps' SVD list
# (sampling/schedulers.py holds the formulas); karras is LongVid's schedule from before they had names.
SCHEDULER_NAMES = ("simple", "sgm_uniform", "karras", "exponential", "normal", "beta", "linear_quadratic",
                   "kl_optimal", "align_your_steps")
DEFAULT_SCHEDULER = "karras"

# The longest video a run plans: 1,000,000 frames (11.6 hours at 24 fps). Planning the progressive sampler
# takes ~14 us a frame and its table grows with length, so a mistyped length fails here, not after hours.
MAX_FRAMES = 1_000_000
MAX_SEED = 2**64 - 1  # torch generators take 64-bit seeds (ComfyUI's seed widget has the same range)


__all__ = ["AUTO", "CONTEXT_WINDOWS", "DEFAULT_SAMPLER", "DEFAULT_SCHEDULER", "SAMPLER_NAMES", "GUIDE_METHODS", "SCHEDULER_NAMES", "FULL_SEQUENCE", "MAX_FRAMES", "MAX_SEED", "MODES", "PROGRESSIVE",
           "REPLACEMENT_WITHOUT_NOISE", "REPLACEMENT_WITH_NOISE", "TRAINING_FREE", "TRAINING_FREE_OPTIONS"]
