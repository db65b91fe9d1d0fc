"""Sigma schedulers by ComfyUI's names (longvid_core.sampling.schedulers): hand-computed formulas and
pinned values (the beta scheduler's were computed with scipy.stats.beta.ppf, which LongVid does not
depend on), the shape every sampler takes, and the settings' checks."""

from __future__ import annotations

import math

import pytest
import torch

from longvid_core import pipeline
from longvid_core.evaluation.tiny import tiny_svd
from longvid_core.problems import InputError
from longvid_core.run.modes import DEFAULT_SCHEDULER, SCHEDULER_NAMES
from longvid_core.sampling.schedulers import (AYS_SVD, SCHEDULERS, beta_quantile, model_table, scheduled_sigmas,
                                              scheduler_levels)
from longvid_core.sampling.schedules import check_sigmas, get_sigmas_karras

LOG_MIN, LOG_MAX = math.log(0.002), math.log(700.0)


def test_names_are_core_schedulers_in_cores_order_and_karras_is_the_default():
    assert tuple(SCHEDULERS) == SCHEDULER_NAMES and DEFAULT_SCHEDULER == "karras"
    assert SCHEDULER_NAMES[:8] == ("simple", "sgm_uniform", "karras", "exponential", "normal", "beta",
                                   "linear_quadratic", "kl_optimal")


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("steps", [1, 2, 4, 10, 24, 50])
def test_every_scheduler_gives_what_the_samplers_take(name, steps):
    sigmas = SCHEDULERS[name](steps)
    assert sigmas.dtype == torch.float64 and len(sigmas) == steps + 1
    assert check_sigmas(sigmas) == steps  # strictly decreasing, positive, 0 last
    assert sigmas[0].item() == pytest.approx(700.0)


def test_karras_is_todays_schedule_bit_for_bit():
    assert torch.equal(scheduled_sigmas("karras", 24), get_sigmas_karras(24))


def test_exponential_normal_and_sgm_uniform_by_hand():
    steps = 8
    expected = [math.exp(LOG_MAX + i / (steps - 1) * (LOG_MIN - LOG_MAX)) for i in range(steps)] + [0.0]
    for name in ("exponential", "normal"):  # EDM's timestep is 0.25 ln(sigma): normal is exponential
        assert SCHEDULERS[name](steps).tolist() == pytest.approx(expected, rel=1e-12)
    uniform = [math.exp(LOG_MAX + i / steps * (LOG_MIN - LOG_MAX)) for i in range(steps)] + [0.0]
    assert SCHEDULERS["sgm_uniform"](steps).tolist() == pytest.approx(uniform, rel=1e-12)


def test_simple_takes_every_nth_entry_of_the_model_table_from_the_top():
    table = model_table()
    assert len(table) == 1000 and table[0].item() == pytest.approx(0.002) and table[-1].item() == pytest.approx(700)
    assert SCHEDULERS["simple"](8).tolist() == [table[-(1 + 125 * i)].item() for i in range(8)] + [0.0]
    assert SCHEDULERS["simple"](8).tolist() == pytest.approx(
        [700.0, 141.7084776, 28.68756088, 5.807529396, 1.175680213, 0.2380055044, 0.0481819967, 0.009753996283, 0.0],
        rel=1e-8)


def test_beta_matches_scipys_quantiles():
    # scipy.stats.beta.ppf(q, 0.6, 0.6) for these q, and core's beta scheduler at 8 steps
    for q, x in ((0.001, 1.855873851745199e-05), (0.1, 0.03958440558878085), (0.37, 0.3227940020973615),
                 (0.5, 0.5), (0.9, 0.9604155944112192), (0.999, 0.9999814412614826)):
        assert beta_quantile(q, 0.6, 0.6) == pytest.approx(x, rel=1e-9, abs=1e-12)
    assert SCHEDULERS["beta"](8).tolist() == pytest.approx(
        [700.0, 337.8857166, 73.85252214, 10.45379139, 1.190800002, 0.1339227031, 0.01895669856, 0.004143412791, 0.0],
        rel=1e-8)


def test_linear_quadratic_and_kl_optimal_by_hand():
    # 4 steps: linear part 0, 0.0125; quadratic part from step 2 reaching 1 at the end
    steps, threshold = 4, 0.025
    linear_steps, quadratic_steps = 2, 2
    diff = linear_steps - threshold * steps
    a = diff / (linear_steps * quadratic_steps ** 2)
    b = threshold / linear_steps - 2 * diff / quadratic_steps ** 2
    c = a * linear_steps ** 2
    rising = [0.0, threshold / 2] + [a * i * i + b * i + c for i in (2, 3)] + [1.0]
    assert SCHEDULERS["linear_quadratic"](steps).tolist() == pytest.approx([700 * (1 - r) for r in rising], rel=1e-12)
    t = [i / 3 for i in range(4)]
    kl = [math.tan(x * math.atan(0.002) + (1 - x) * math.atan(700.0)) for x in t] + [0.0]
    assert SCHEDULERS["kl_optimal"](4).tolist() == pytest.approx(kl, rel=1e-12)


def test_align_your_steps_is_the_published_svd_list_resampled_log_linearly():
    assert SCHEDULERS["align_your_steps"](10).tolist() == list(AYS_SVD[:-1]) + [0.0]
    # 6 steps: the list's logarithms interpolated on an even grid (as numpy.interp), last value 0
    assert SCHEDULERS["align_your_steps"](6).tolist() == pytest.approx(
        [700.0, 23.95935962, 6.465784573, 1.789, 0.5421170086, 0.1005827969, 0.0], rel=1e-8)


def test_settings_refuse_an_unknown_scheduler_and_a_beta_with_repeated_levels():
    assert pipeline.settings_problem(scheduler="karras") is None
    problem = pipeline.settings_problem(scheduler="karas")
    assert problem.startswith("scheduler: expected one of simple, sgm_uniform, karras") and "'karas'" in problem
    assert scheduler_levels("beta", 1000) < 1000
    problem = pipeline.settings_problem(steps=1000, scheduler="beta")
    assert problem.startswith("steps: expected a count the beta scheduler gives as many distinct levels for")
    with pytest.raises(InputError, match="scheduler: expected one of"):
        pipeline.check_settings(pipeline.SamplingSettings(4, scheduler="nope"))


@pytest.mark.parametrize("mode", ["progressive", "full_sequence"])
def test_a_run_samples_on_its_schedulers_levels(mode):
    model = tiny_svd(seed=0)
    keyframes, _ = pipeline.condition_images(model, torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0)),
                                             16, 16)
    seen = {}
    denoise = model.denoise

    def recording(x, sigma, cond, **kwargs):
        seen.setdefault(name, set()).update(sigma.flatten().tolist())
        return denoise(x, sigma, cond, **kwargs)

    model.denoise = recording
    for name in ("karras", "align_your_steps"):
        settings = pipeline.SamplingSettings(frames=6, mode=mode, window=4, chunk=2, steps=4, cfg=1.0,
                                             scheduler=name)
        run = pipeline.prepare_run(model, keyframes, settings)
        assert name in run.settings.describe() or name == "karras"
        run.into(pipeline.LatentSink())
        levels = scheduled_sigmas(name, 4).tolist()[:-1]
        assert set(levels) <= seen[name], (name, sorted(seen[name]))
