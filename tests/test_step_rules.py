"""Step rules by ComfyUI's sampler names (longvid_core.sampling.step_rules) against reference
samplers written here from k-diffusion's formulas (scalar sigma, the whole clip at one level), with
the same deterministic denoiser, sigmas and noise; and per frame in the progressive window, where
each frame keeps its own history and draws its own noise."""

from __future__ import annotations

import math

import pytest
import torch

from longvid_core import sampling
from longvid_core.sampling.noise import frame_noise
from longvid_core.sampling.step_rules import STEP_RULES, ancestral_step
from longvid_core.sampling.walk import STEP_NOISE_STREAM
from longvid_core.sampling.schedulers import SCHEDULERS
from tests.test_samplers import FRAME, NO_CFG, Recorder, framewise_predict, make_cond, mixing_predict

F64 = torch.float64
SEED = 3


# --------------------------------------------------------------- references (k-diffusion's loops)


def step_noise(frames: range, step: int) -> torch.Tensor:
    return torch.stack([frame_noise(SEED, k, FRAME, stream=STEP_NOISE_STREAM - step, dtype=F64) for k in frames], 1)


def reference(name: str, model, x: torch.Tensor, sigmas: list[float], frames: range) -> torch.Tensor:
    """k-diffusion's sample_<name> with scalar sigmas; ``model(x, sigma: float) -> x0``."""
    def to_d(x, sigma, denoised):
        return (x - denoised) / sigma

    if name.startswith("uni_pc"):
        return reference_uni_pc(model, x, sigmas, "bh2" if name == "uni_pc_bh2" else "bh1")
    if name == "deis":
        deis_weights = deis_coefficient_list(sigmas)
    old_denoised, h_last, history, slopes = None, None, [], []
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, s)
        if name in ("euler", "ddim"):
            x = x + to_d(x, s, denoised) * (s_next - s)
        elif name == "euler_ancestral":
            down, up = ancestral_step(torch.tensor(s, dtype=F64), torch.tensor(s_next, dtype=F64))
            x = x + to_d(x, s, denoised) * (down.item() - s)
            if s_next > 0:
                x = x + step_noise(frames, i) * up.item()
        elif name == "heun":
            d = to_d(x, s, denoised)
            if s_next == 0:
                x = x + d * (s_next - s)
            else:
                x_2 = x + d * (s_next - s)
                d_2 = to_d(x_2, s_next, model(x_2, s_next))
                x = x + (d + d_2) / 2 * (s_next - s)
        elif name == "dpm_2":
            d = to_d(x, s, denoised)
            if s_next == 0:
                x = x + d * (s_next - s)
            else:
                mid = math.exp((math.log(s) + math.log(s_next)) / 2)
                x_2 = x + d * (mid - s)
                x = x + to_d(x_2, mid, model(x_2, mid)) * (s_next - s)
        elif name == "dpmpp_2m":
            t, t_next = -math.log(s), (-math.log(s_next) if s_next > 0 else math.inf)
            h = t_next - t
            if old_denoised is None or s_next == 0:
                x = (s_next / s) * x - math.expm1(-h) * denoised
            else:
                r = (t - (-math.log(sigmas[i - 1]))) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
                x = (s_next / s) * x - math.expm1(-h) * d
            old_denoised = denoised
        elif name == "dpmpp_2m_sde":  # eta 1, midpoint
            if s_next == 0:
                x = denoised
            else:
                h = math.log(s) - math.log(s_next)
                x = s_next / s * math.exp(-h) * x - math.expm1(-2 * h) * denoised
                if old_denoised is not None:
                    x = x + 0.5 * -math.expm1(-2 * h) * (h / h_last) * (denoised - old_denoised)
                x = x + step_noise(frames, i) * s_next * math.sqrt(-math.expm1(-2 * h))
                h_last = h
        elif name == "dpmpp_3m_sde":  # eta 1
            if s_next == 0:
                x = denoised
            else:
                h = math.log(s) - math.log(s_next)
                h_eta = 2 * h
                x = math.exp(-h_eta) * x - math.expm1(-h_eta) * denoised
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                if len(history) >= 2:
                    (d_2, h_2), (d_1, h_1) = history[-2:]
                    r0, r1 = h_1 / h, h_2 / h
                    d1_0, d1_1 = (denoised - d_1) / r0, (d_1 - d_2) / r1
                    x = x + phi_2 * (d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)) - (phi_2 / h_eta - 0.5) * (
                        d1_0 - d1_1) / (r0 + r1)
                elif history:
                    d_1, h_1 = history[-1]
                    x = x + phi_2 * (denoised - d_1) / (h_1 / h)
                x = x + step_noise(frames, i) * s_next * math.sqrt(-math.expm1(-2 * h))
                history.append((denoised, h))
        elif name == "lms":  # order 4: the Lagrange basis integrated numerically (Simpson, 2000 panels)
            slopes.append(to_d(x, s, denoised))
            order = min(len(slopes), 4)
            times = [sigmas[i - k] for k in range(order)]
            coefficients = []
            for j in range(order):
                def basis(tau):
                    return math.prod((tau - times[k]) / (times[j] - times[k]) for k in range(order) if k != j)
                n, a, b = 2000, s, s_next
                step = (b - a) / n
                coefficients.append(step / 3 * sum((1 if q in (0, n) else 4 if q % 2 else 2) * basis(a + q * step)
                                                   for q in range(n + 1)))
            x = x + sum(c * d for c, d in zip(coefficients, slopes[::-1][:order]))
        elif name == "ipndm":
            d = to_d(x, s, denoised)
            order = min(4, len(slopes) + 1)
            coefficients = {1: [1], 2: [3, -1], 3: [23, -16, 5], 4: [55, -59, 37, -9]}[order]
            divisor = {1: 1, 2: 2, 3: 12, 4: 24}[order]
            if s_next == 0:
                x = denoised
            else:
                x = x + (s_next - s) * sum(c * v for c, v in zip(coefficients, [d] + slopes[::-1])) / divisor
            slopes = (slopes + [d])[-3:]
        elif name == "deis":  # core's sample_deis, max order 3, "tab" coefficients
            d = to_d(x, s, denoised)
            order = 1 if s_next <= 0 else min(3, i + 1)
            if order == 1:
                x = x + (s_next - s) * d
            else:
                x = x + sum(c * v for c, v in zip(deis_weights[i], [d] + slopes[::-1]))
            slopes = (slopes + [d])[-2:]
        elif name == "lcm":
            x = denoised
            if s_next > 0:
                x = x + s_next * step_noise(frames, i)
        else:
            raise AssertionError(name)
        old_denoised = denoised
    return x


def deis_coefficient_list(sigmas: list[float], points: int = 10_000) -> list[list[float]]:
    """Core's deis.get_deis_coeff_list ("tab", max order 3) for the whole schedule, from its steps:
    sigmas to variance-preserving time (EDM's sigma 0.002 .. 80 at t = 1e-3 .. 1), then per step the
    slopes' Lagrange polynomials in t times dsigma/dt (d log alpha / dt by autograd, as core takes it)
    summed at ``points`` points of the step, each weighted by the step over ``points``."""
    eps, low, high = 1e-3, torch.tensor(0.002, dtype=F64), torch.tensor(80.0, dtype=F64)
    beta_d = 2 * (torch.log(low ** 2 + 1) / eps - torch.log(high ** 2 + 1)) / (eps - 1)
    beta_min = torch.log(high ** 2 + 1) - 0.5 * beta_d
    sig = torch.tensor(sigmas, dtype=F64)
    t = ((beta_min ** 2 + 2 * beta_d * (sig ** 2 + 1).log()).sqrt() - beta_min) / beta_d
    beta_0, beta_1 = beta_min, beta_d + beta_min
    weights = []
    for i in range(len(sigmas) - 1):
        order = min(i + 1, 3)
        if order == 1 or sigmas[i + 1] == 0:
            weights.append([])
            continue
        taus = torch.linspace(float(t[i]), float(t[i + 1]), points, dtype=F64).requires_grad_(True)
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        alpha.log().sum().backward()
        integrand = (-0.5 * taus.grad / torch.sqrt(alpha * (1 - alpha))).detach()
        taus = taus.detach()
        prev = [t[i - k] for k in range(order)]
        row = []
        for j in range(order):
            poly = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    poly = poly * (taus - prev[k]) / (prev[j] - prev[k])
            row.append(float((integrand * poly).sum() * (t[i + 1] - t[i]) / points))
        weights.append(row)
    return weights


def reference_uni_pc(model, x: torch.Tensor, sigmas: list[float], variant: str) -> torch.Tensor:
    """Core's sample_unipc (UniPC's multistep loop, data prediction, order min(3, steps - 1),
    lower_order_final) with its variance-preserving bookkeeping: x scaled by 1/sqrt(1 + sigma^2),
    lambda = log(alpha/std), the last sigma 0 replaced by 0.001, the result scaled back."""
    times = list(sigmas)
    if times[-1] == 0:
        times[-1] = 0.001
    steps = len(times) - 1

    def alpha(s):
        return 1 / math.sqrt(1 + s * s)

    def std(s):
        return s / math.sqrt(1 + s * s)

    def lam(s):
        return math.log(alpha(s) / std(s))

    def data(x_vp, s):  # core's predict_eps_sigma, then UniPC's data_prediction_fn
        x_sigma = x_vp * math.sqrt(s * s + 1)
        eps = (x_sigma - model(x_sigma, s)) / s
        return (x_vp - std(s) * eps) / alpha(s)

    def update(x, models, prev_times, t, order, use_corrector):
        s0, m0 = prev_times[-1], models[-1]
        h = lam(t) - lam(s0)
        rks, d1s = [], []
        for i in range(1, order):
            rk = (lam(prev_times[-(i + 1)]) - lam(s0)) / h
            rks.append(rk)
            d1s.append((models[-(i + 1)] - m0) / rk)
        rks.append(1.0)
        hh = -h
        h_phi_1 = math.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        factorial_i = 1
        b_h = hh if variant == "bh1" else math.expm1(hh)
        rows, b = [], []
        for i in range(1, order + 1):
            rows.append([r ** (i - 1) for r in rks])
            b.append(h_phi_k * factorial_i / b_h)
            factorial_i *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial_i
        big_r, b = torch.tensor(rows, dtype=F64), torch.tensor(b, dtype=F64)
        if d1s:
            rhos_p = [0.5] if order == 2 else torch.linalg.solve(big_r[:-1, :-1], b[:-1]).tolist()
        if use_corrector:
            rhos_c = [0.5] if order == 1 else torch.linalg.solve(big_r, b).tolist()
        x_t_ = std(t) / std(s0) * x - alpha(t) * h_phi_1 * m0
        pred_res = sum(r * d for r, d in zip(rhos_p, d1s)) if d1s else 0
        x_t = x_t_ - alpha(t) * b_h * pred_res
        model_t = None
        if use_corrector:
            model_t = data(x_t, t)
            corr_res = sum(r * d for r, d in zip(rhos_c[:-1], d1s)) if d1s else 0
            x_t = x_t_ - alpha(t) * b_h * (corr_res + rhos_c[-1] * (model_t - m0))
        return x_t, model_t

    order = min(3, steps - 1)
    x = x / math.sqrt(1 + times[0] ** 2)
    prev_times, models = [times[0]], [data(x, times[0])]
    for step in range(1, order):
        x, model_x = update(x, models, prev_times, times[step], step, True)
        prev_times.append(times[step])
        models.append(model_x if model_x is not None else data(x, times[step]))
    for step in range(order, steps + 1):
        step_order = min(order, steps + 1 - step)
        x, model_x = update(x, models, prev_times, times[step], step_order, step != steps)
        if step < steps:
            if model_x is None:
                model_x = data(x, times[step])
            prev_times, models = (prev_times + [times[step]])[-order:], (models + [model_x])[-order:]
    return x / alpha(times[-1])


def one_level(predict):
    def model(x, s):
        return predict(x, torch.full(x.shape[:2], s, dtype=F64), make_cond(0.5))
    return model


def start(frames: range, sigmas: list[float]) -> torch.Tensor:
    return sigmas[0] * torch.stack([frame_noise(SEED, k, FRAME, dtype=F64) for k in frames], 1)


SCHEDULE = SCHEDULERS["karras"](6).to(F64)


# ------------------------------------------------------------------------------- the tests


def test_the_names_are_comfyuis():
    assert list(STEP_RULES) == ["euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde",
                                "lms", "ipndm", "lcm", "ddim", "deis", "uni_pc", "uni_pc_bh2"]


@pytest.mark.parametrize("name", list(STEP_RULES))
@pytest.mark.parametrize("schedule", ["karras", "align_your_steps"])
def test_one_level_sampling_equals_the_reference(name, schedule):
    sigmas = SCHEDULERS[schedule](6).to(F64)
    recorder, progress = Recorder(mixing_predict), []
    out = sampling.sample_full_sequence(recorder, make_cond(0.5), 5, FRAME, sigmas, seed=SEED, dtype=F64,
                                        step_rule=STEP_RULES[name], callback=progress.append, **NO_CFG)
    levels = sigmas.tolist()
    expected = reference(name, one_level(mixing_predict), start(range(5), levels), levels, range(5))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)
    plan = sampling.plan_full_sequence(5, steps=6, step_rule=STEP_RULES[name])
    assert len(recorder.calls) == plan.denoiser_calls == progress[-1].done == progress[-1].total
    assert plan.denoiser_calls == {"heun": 11, "dpm_2": 11}.get(name, 6)  # two-stage: one call on the last step


@pytest.mark.parametrize("name", list(STEP_RULES))
def test_a_progressive_window_at_one_level_is_the_one_level_run(name):
    # window == chunk: one chunk in the window, all its frames at one level through the schedule
    levels = SCHEDULE.tolist()
    out = sampling.sample_progressive(Recorder(mixing_predict), make_cond(0.5), 4, FRAME, SCHEDULE, window=4,
                                      chunk=4, seed=SEED, dtype=F64, step_rule=STEP_RULES[name], **NO_CFG)
    expected = reference(name, one_level(mixing_predict), start(range(4), levels), levels, range(4))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", list(STEP_RULES))
@pytest.mark.parametrize("partitions, lookahead", [(1, False), (2, False), (2, True)])
def test_each_frame_keeps_its_own_history_and_noise_through_window_shifts(name, partitions, lookahead):
    # A framewise denoiser: frame k's path depends on its own sigmas, history and noise only, so in
    # the progressive window (frames at different levels, shifting every call, split into partitions)
    # it must be the path of a one-frame run of frame k through the whole schedule.
    steps = 8
    sigmas = SCHEDULERS["karras"](steps).to(F64)
    levels = sigmas.tolist()
    recorder, progress = Recorder(framewise_predict), []
    out = sampling.sample_progressive(recorder, make_cond(0.5), 9, FRAME, sigmas, window=4, chunk=1, seed=SEED,
                                      dtype=F64, step_rule=STEP_RULES[name], partitions=partitions,
                                      lookahead=lookahead, callback=progress.append, **NO_CFG)
    for k in range(9):
        alone = reference(name, one_level(framewise_predict), start(range(k, k + 1), levels), levels, range(k, k + 1))
        torch.testing.assert_close(out[:, k:k + 1], alone, rtol=0, atol=1e-10, msg=f"frame {k}")
    plan = sampling.plan_progressive(9, window=4, chunk=1, steps=steps, partitions=partitions, lookahead=lookahead,
                                     step_rule=STEP_RULES[name])
    assert len(recorder.calls) == plan.denoiser_calls == progress[-1].total
    assert sum(x.shape[1] for x, _, _ in recorder.calls) == plan.frame_evaluations


@pytest.mark.parametrize("name", list(STEP_RULES))
@pytest.mark.parametrize("mode", ["replacement", "context_windows"])
def test_every_rule_runs_in_the_other_modes_with_exact_plans(name, mode):
    recorder, progress = Recorder(mixing_predict), []
    if mode == "replacement":
        iterate, options = sampling.iter_replacement, dict(window=5, condition_frames=2, renoise_condition=True)
        plan = sampling.plan_replacement(11, window=5, condition_frames=2, steps=6, step_rule=STEP_RULES[name])
    else:
        iterate, options = sampling.iter_context_windows, dict(length=5, overlap=2)
        plan = sampling.plan_context_windows(11, length=5, overlap=2, steps=6, step_rule=STEP_RULES[name])
    frames = list(iterate(recorder, make_cond(0.5), 11, FRAME, SCHEDULE, seed=SEED, dtype=F64,
                          step_rule=STEP_RULES[name], callback=progress.append, **options, **NO_CFG))
    assert [k for k, _ in frames] == list(range(11))
    assert all(bool(torch.isfinite(x).all()) for _, x in frames)
    assert len(recorder.calls) == plan.denoiser_calls == progress[-1].done == progress[-1].total


def test_memory_is_dropped_as_frames_finish():
    from longvid_core.sampling.progressive import iter_progressive

    generator = iter_progressive(Recorder(framewise_predict), make_cond(0.5), 40, FRAME, SCHEDULERS["karras"](8),
                                 window=4, chunk=1, seed=SEED, step_rule=STEP_RULES["dpmpp_2m"], **NO_CFG)
    for index, _ in generator:
        if index == 30:
            memory = generator.gi_frame.f_locals["walk"].memory
            assert memory and max(memory) > 30 and min(memory) > 30 and len(memory) <= 4  # the window's frames only


def test_sampler_names_are_one_list_and_the_settings_check_them():
    from longvid_core import pipeline
    from longvid_core.run.modes import DEFAULT_SAMPLER, SAMPLER_NAMES

    assert tuple(STEP_RULES) == SAMPLER_NAMES and DEFAULT_SAMPLER == "euler"
    problem = pipeline.settings_problem(sampler_name="dpmpp_9m")
    assert problem.startswith("sampler_name: expected one of euler, euler_ancestral") and "'dpmpp_9m'" in problem
    settings = pipeline.SamplingSettings(8, sampler_name="heun", scheduler="exponential")
    assert settings.describe().endswith("heun sampler, exponential schedule")


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m", "euler_ancestral"])
def test_the_pipeline_runs_a_named_sampler_with_an_exact_plan(name):
    from longvid_core import pipeline
    from longvid_core.evaluation.tiny import tiny_svd

    model = tiny_svd(seed=0)
    keyframes, _ = pipeline.condition_images(model, torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0)),
                                             16, 16)
    progress = []
    settings = pipeline.SamplingSettings(frames=8, mode="progressive", window=4, chunk=2, steps=4, cfg=1.0,
                                         sampler_name=name)
    run = pipeline.prepare_run(model, keyframes, settings)
    latents = run.into(pipeline.LatentSink(), callback=progress.append)
    calls = [p for p in progress if p.stage == "sampling"]
    assert calls[-1].done == run.plan.denoiser_calls and torch.isfinite(latents).all()
    euler = pipeline.prepare_run(model, keyframes, pipeline.SamplingSettings(frames=8, mode="progressive", window=4,
                                                                             chunk=2, steps=4, cfg=1.0))
    assert (run.plan.denoiser_calls > euler.plan.denoiser_calls) == (name == "heun")
    assert not torch.equal(latents, euler.into(pipeline.LatentSink()))


def test_auto_takes_the_sampler_and_scheduler_the_weights_recommend_and_lcm_warns_without_distillation():
    from dataclasses import replace

    from longvid_core import pipeline
    from longvid_core.evaluation.tiny import tiny_svd
    from longvid_core.weights.trained_for import TrainedFor

    model = tiny_svd(seed=0)
    model.trained_for = TrainedFor(progressive=False, clip_frames=8, sampler_name="dpmpp_2m", scheduler="exponential")
    settings = pipeline.SamplingSettings(frames=8, window=4, chunk=2, steps=4)
    chosen, why = pipeline.resolve_auto(model, settings)
    assert (chosen.sampler_name, chosen.scheduler) == ("dpmpp_2m", "exponential")
    assert why.endswith("; dpmpp_2m and exponential as the weights recommend")
    mine, _ = pipeline.resolve_auto(model, replace(settings, sampler_name="heun"))  # a choice of the user's stays
    assert (mine.sampler_name, mine.scheduler) == ("heun", "exponential")
    explicit, _ = pipeline.resolve_auto(model, replace(settings, mode="progressive"))  # only auto follows the file
    assert (explicit.sampler_name, explicit.scheduler) == ("euler", "karras")
    # round trip through the metadata the trainer writes
    record = TrainedFor(progressive=True, clip_frames=8, window=4, chunk=2, steps=4, sampler_name="lcm", cfg=1.0,
                        distilled=True)
    assert TrainedFor.from_metadata(record.to_metadata()) == record
    # lcm with cfg > 1 on weights that record no distillation: a warning, not a refusal
    lcm = replace(settings, mode="progressive", sampler_name="lcm", cfg=2.5)
    assert pipeline.settings_notes(model, lcm)[0].startswith("sampler lcm with cfg 2.5: LCM is for consistency-distilled")
    assert pipeline.settings_notes(model, replace(lcm, cfg=1.0)) == []
    model.trained_for = record
    assert pipeline.settings_notes(model, lcm) == []


# ------------------------------------------------- core's own sampler functions (whole schedule)


def k_sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """k-diffusion's sample_euler signature and loop (no churn), as core's KSAMPLER holds it."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **(extra_args or {}))
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def k_sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
    s_in = x.new_ones([x.shape[0]])
    old = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - (-sigmas[i - 1].log())) / h
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * ((1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old)
        old = denoised
    return x


CORE_MODES = {
    "full_sequence": (sampling.iter_full_sequence, {}, 7),
    "replacement_without_noise": (sampling.iter_replacement, dict(window=5, condition_frames=2), 11),
    "replacement_with_noise": (sampling.iter_replacement, dict(window=5, condition_frames=2,
                                                                renoise_condition=True), 11),
    "context_windows": (sampling.iter_context_windows, dict(length=5, overlap=2), 12),
}


@pytest.mark.parametrize("mode", list(CORE_MODES))
@pytest.mark.parametrize("name, function", [("euler", k_sample_euler), ("dpmpp_2m", k_sample_dpmpp_2m)])
def test_cores_own_sampler_function_runs_in_one_level_modes_as_longvids_rule_does(mode, name, function):
    from longvid_core.sampling.schedule_samplers import ScheduleSampler

    iterate, options, frames = CORE_MODES[mode]
    guides = [sampling.Guide(frames - 2, torch.full(FRAME, 0.3, dtype=F64))]
    results = {}
    for label, rule in (("ours", STEP_RULES[name]), ("core", ScheduleSampler(name, function))):
        recorder, progress = Recorder(mixing_predict), []
        out = sampling.collect_frames(iterate(recorder, make_cond(0.5), frames, FRAME, SCHEDULE, seed=SEED, dtype=F64,
                                              step_rule=rule, guides=guides, callback=progress.append, **options,
                                              **NO_CFG), frames)
        results[label] = out
        assert torch.equal(out[:, frames - 2], guides[0].latent)  # the guide is reached exactly
        if label == "core":
            assert len(recorder.calls) == progress[-1].done == progress[-1].total  # planned: one call a step
    torch.testing.assert_close(results["core"], results["ours"], rtol=0, atol=1e-10)


def test_a_whole_schedule_function_is_refused_in_progressive_mode():
    from longvid_core.sampling.schedule_samplers import ScheduleSampler

    with pytest.raises(ValueError, match="sampler: a progressive window holds many noise levels per call"):
        sampling.sample_progressive(Recorder(), make_cond(0.5), 8, FRAME, SCHEDULE, window=4, chunk=2,
                                    step_rule=ScheduleSampler("uni_pc", k_sample_euler))


# ------------------------------------------------- the whole matrix: sampler x scheduler x mode


@pytest.mark.parametrize("mode", ["progressive", "partitioned_lookahead", "full_sequence", "replacement",
                                  "context_windows"])
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_every_sampler_and_scheduler_runs_in_every_mode_with_exact_plans_and_cancel(mode, scheduler):
    from longvid_core.progress import Cancelled
    from tests.test_samplers import SAMPLERS

    iterate, options, plan_fn = SAMPLERS[mode]
    sigmas = SCHEDULERS[scheduler](6).to(F64)
    for name, rule in STEP_RULES.items():
        recorder, progress = Recorder(mixing_predict), []
        frames = list(iterate(recorder, make_cond(0.5), 7, FRAME, sigmas, seed=SEED, dtype=F64, step_rule=rule,
                              callback=progress.append, **options, **NO_CFG))
        plan = plan_fn(7, steps=6, step_rule=rule, **options)
        assert [k for k, _ in frames] == list(range(7)), name
        assert all(bool(torch.isfinite(x).all()) for _, x in frames), name
        assert len(recorder.calls) == plan.denoiser_calls == progress[-1].done == progress[-1].total, name
        # a cancel asked for at the third call: no call after it
        stopped = Recorder(mixing_predict)
        with pytest.raises(Cancelled):
            list(iterate(stopped, make_cond(0.5), 7, FRAME, sigmas, seed=SEED, dtype=F64, step_rule=rule,
                         callback=lambda p: False if p.done == 3 else None, **options, **NO_CFG))
        assert len(stopped.calls) == 3, name


@pytest.mark.parametrize("name", ["dpmpp_2m", "lms", "ipndm", "deis", "uni_pc", "uni_pc_bh2"])
@pytest.mark.parametrize("mode", ["progressive", "full_sequence"])
def test_a_frame_a_guide_lets_go_starts_its_multistep_history_afresh(name, mode):
    # a refine guide (strength 0.5) on frame 2 holds it for the first half of the schedule while the
    # other frames step; let go, it is a one-frame run of core's sampler from that level, its start
    # the guide noised there (history from the held steps would be of a path it never took)
    from longvid_core.sampling import Guide
    from longvid_core.sampling.guides import hold_steps

    steps = 8
    sigmas = SCHEDULERS["karras"](steps).to(F64)
    levels = sigmas.tolist()
    latent = torch.full(FRAME, 0.3, dtype=F64)
    guide = Guide(2, latent, 0.5)
    last = hold_steps([guide], steps)[2]
    options = dict(window=4, chunk=1) if mode == "progressive" else {}
    sample = sampling.sample_progressive if mode == "progressive" else sampling.sample_full_sequence
    out = sample(Recorder(framewise_predict), make_cond(0.5), 5, FRAME, sigmas, seed=SEED, dtype=F64,
                 step_rule=STEP_RULES[name], guides=[guide], **options, **NO_CFG)
    start_x = (latent + levels[last] * frame_noise(SEED, 2, FRAME, dtype=F64))[:, None]
    alone = reference(name, one_level(framewise_predict), start_x, levels[last:], range(2, 3))
    torch.testing.assert_close(out[:, 2:3], alone, rtol=0, atol=1e-10)
    free = reference(name, one_level(framewise_predict), start(range(4, 5), levels), levels, range(4, 5))
    torch.testing.assert_close(out[:, 4:5], free, rtol=0, atol=1e-10)  # the others as without the guide


@pytest.fixture(scope="module")
def tiny_run_inputs():
    from longvid_core import pipeline
    from longvid_core.evaluation.tiny import tiny_svd

    model = tiny_svd(seed=0)
    picture = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    return model, pipeline.condition_images(model, picture, 16, 16)[0]


@pytest.mark.parametrize("name", list(STEP_RULES))
def test_every_sampler_and_scheduler_runs_on_the_tiny_model_with_exact_plans_and_cancel(name, tiny_run_inputs):
    # the tiny SVD through the pipeline: every scheduler in progressive mode (each frame at its own
    # level), every other mode with karras; calls made = the plan's, and a cancel stops at its call
    from dataclasses import replace

    from longvid_core import pipeline
    from longvid_core.progress import Cancelled

    model, keyframes = tiny_run_inputs
    runs = [("progressive", scheduler) for scheduler in SCHEDULERS] + [
        (mode, "karras") for mode in pipeline.MODES if mode not in (pipeline.AUTO, pipeline.PROGRESSIVE)]
    for mode, scheduler in runs:
        settings = pipeline.SamplingSettings(frames=6, mode=mode, window=4, chunk=2, steps=4, cfg=1.0,
                                             sampler_name=name, scheduler=scheduler)
        progress = []
        run = pipeline.prepare_run(model, keyframes, settings)
        latents = run.into(pipeline.LatentSink(), callback=progress.append)
        calls = [p for p in progress if p.stage == "sampling"]
        assert calls[-1].done == calls[-1].total == run.plan.denoiser_calls, (mode, scheduler)
        assert latents.shape[1] == 6 and torch.isfinite(latents).all(), (mode, scheduler)
    seen = []

    def stop_at_third(p):
        seen.append(p.done)
        return False if p.stage == "sampling" and p.done == 3 else None

    with pytest.raises(Cancelled):
        pipeline.prepare_run(model, keyframes, replace(settings, mode="progressive")).into(
            pipeline.LatentSink(), callback=stop_at_third)
    assert max(seen) == 3
