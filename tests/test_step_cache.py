"""Deep-feature caching in the rolling samplers (longvid_core/sampling/step_cache.py)."""

from dataclasses import replace

import pytest
import torch

from longvid_core import pipeline
from longvid_core.evaluation.tiny import tiny_svd
from longvid_core.progress import Cancelled
from longvid_core.sampling.schedules import get_sigmas_karras
from longvid_core.sampling.step_cache import DeepCacheDenoiser, DeepCacheSettings
from tests.tiny import unet_inputs

BASE = pipeline.SamplingSettings(14, "progressive", window=4, chunk=2, steps=8, cfg=1.5, min_cfg=1.0, seed=3)
# every mode that rolls, and full_sequence; partitions and lookahead need window/chunk >= 2 chunks
MODES = {
    "progressive": BASE,
    "partitioned_lookahead": replace(BASE, window=8, steps=8, partitions=2, lookahead=True),
    "context_windows": replace(BASE, mode="context_windows", context_overlap=2),
    "replacement_with_noise": replace(BASE, mode="replacement_with_noise"),
    "full_sequence": replace(BASE, frames=6, mode="full_sequence"),
}


@pytest.fixture(scope="module")
def model():
    return tiny_svd(seed=0)


def keyframes(model, size=16, seeds=(0,)):
    images = torch.rand(len(seeds), size, size, 3, generator=torch.Generator().manual_seed(seeds[0]))
    starts = [0, 6][: len(seeds)]
    return pipeline.condition_images(model, images, size, size, starts)[0]


class Recording:
    """The model, recording for every denoiser call whether deep features were reused."""

    def __init__(self, model):
        self.inner, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def denoise(self, x, sigma, cond, **options):
        self.calls.append(("reused" if "deep_features" in options else "full", x.shape[1], float(sigma.max())))
        return self.inner.denoise(x, sigma, cond, **options)


def test_reusing_the_deep_features_of_the_same_input_gives_the_same_output(model):
    sample, context, time_ids = unet_inputs(batch=2, frames=5, cross=model.unet.config.cross_attention_dim)
    t = torch.linspace(-1, 1, 10).reshape(2, 5)
    with torch.no_grad():
        plain = model.unet(sample, t, context, time_ids)
        kept, deep = model.unet(sample, t, context, time_ids, keep_deep_features=True)
        reused = model.unet(sample, t, context, time_ids, deep_features=deep)
    assert torch.equal(kept, plain) and torch.equal(reused, plain)
    with pytest.raises(ValueError, match="deep_features hold 10 frames; this call has 8"):
        model.unet(sample[:, :4], t[:, :4], context, time_ids, deep_features=deep)


def test_cache_off_is_todays_sampler_bit_for_bit(model):
    cond = keyframes(model)
    assert BASE.cache_interval == 0
    run = pipeline.prepare_run(model, cond, BASE)
    latents = run.into(pipeline.LatentSink())
    assert run.cache is None
    with torch.no_grad():
        from longvid_core import sampling

        expected = sampling.sample_progressive(model.denoise, cond, 14, run.frame_shape, get_sigmas_karras(8),
                                               window=4, chunk=2, seed=3, cfg=1.5, min_cfg=1.0)
    assert torch.equal(latents, expected)


@pytest.mark.parametrize("name", list(MODES))
def test_every_mode_counts_what_it_reused_and_stays_close(model, name):
    settings = MODES[name]
    cond = keyframes(model)
    plain = pipeline.generate(model, cond, settings, pipeline.LatentSink())
    recording = Recording(model)
    run = pipeline.prepare_run(recording, cond, replace(settings, cache_interval=1))
    cached = run.into(pipeline.LatentSink())
    stats = run.cache.stats
    kinds = [kind for kind, _, _ in recording.calls]
    assert stats.calls == len(kinds) == run.plan.denoiser_calls
    assert stats.reused_calls == kinds.count("reused") > 0 and stats.full_calls == kinds.count("full")
    assert stats.reused_frame_evaluations + stats.full_frame_evaluations == sum(2 * n for _, n, _ in
                                                                                recording.calls)  # CFG doubles
    # the first call is always full; interval 1: a single window never reuses twice in a row
    assert kinds[0] == "full"
    if name in ("progressive", "full_sequence"):
        assert ("reused", "reused") not in list(zip(kinds, kinds[1:]))
    # the schedule's last eighth (here the last step) always runs fully
    threshold = DeepCacheSettings().threshold(get_sigmas_karras(settings.steps))
    assert all(kind == "full" for kind, _, top in recording.calls if top < threshold)
    error = (cached - plain).abs().mean() / plain.abs().mean()
    assert 0 < error < 0.3, error  # a tiny random model (measured 0.21-0.23): behaviour only; see the next test


def test_a_window_that_shifted_runs_fully(model):
    recording = Recording(model)
    run = pipeline.prepare_run(recording, keyframes(model), replace(BASE, cache_interval=5))
    run.into(pipeline.LatentSink())
    # progressive, window 4 / chunk 2 / 8 steps: the window shifts every 4 calls; with a large interval
    # every call between shifts reuses, every first call after a shift is full
    kinds = [kind for kind, _, _ in recording.calls]
    assert kinds.count("reused") > kinds.count("full") / 2
    for i in range(0, len(kinds) - 4, 4):
        if recording.calls[i][1] == recording.calls[i + 1][1]:
            assert kinds[i] == "full"


def test_keyframes_prefix_and_cancel_work_with_the_cache(model):
    cond = keyframes(model, seeds=(0, 1))
    settings = replace(BASE, cache_interval=1)
    prefix = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latents = pipeline.generate(model, cond, settings, pipeline.LatentSink(), prefix=prefix)
    assert latents.shape == (1, 17, 4, 8, 8) and torch.equal(latents[:, :3], prefix)
    seen = []

    def stop_after_five(progress):
        seen.append(progress.done)
        return progress.done < 5

    with pytest.raises(Cancelled):
        pipeline.generate(model, cond, settings, pipeline.LatentSink(), callback=stop_after_five)
    assert seen[-1] == 5


def test_settings_are_checked():
    with pytest.raises(ValueError, match="cache_interval: expected at least 0, found -1"):
        pipeline.check_settings(replace(BASE, cache_interval=-1))
    with pytest.raises(ValueError, match="cache interval must be a whole number"):
        DeepCacheSettings(interval=1.5)
    assert "deep cache 2" in replace(BASE, cache_interval=2).describe()


def test_only_a_few_windows_are_kept(model):
    sigmas = get_sigmas_karras(4)
    cache = DeepCacheDenoiser(model, DeepCacheSettings(interval=3, max_windows=2), 0.0)
    cond = keyframes(model)[0][1]
    x = torch.randn(1, 3, 4, 8, 8)
    for first in (0, 1, 2, 0):  # window 0 was dropped when window 2 came: its next call is full again
        cache.window(first, 3)
        cache(x, torch.full((1, 3), float(sigmas[1])), cond)
    assert (cache.stats.full_calls, cache.stats.reused_calls) == (4, 0)
    cache.window(0, 3)
    cache(x, torch.full((1, 3), float(sigmas[1])), cond)
    assert cache.stats.reused_calls == 1


def test_on_the_trained_bundled_model_interval_1_stays_within_8_percent():
    # the stated tolerance: mean |cached - uncached| / mean |uncached| of the latents, measured 0.048
    from longvid_core import load_svd
    from longvid_core.run.cli import synthetic_first_frame

    bundled = load_svd(pipeline.BUNDLED_MODEL)
    cond = pipeline.condition_images(bundled, synthetic_first_frame(0, 32, 32), 32, 32)[0]
    settings = pipeline.SamplingSettings(24, "progressive", window=8, chunk=2, steps=16, cfg=1.0, min_cfg=1.0)
    plain = pipeline.generate(bundled, cond, settings, pipeline.LatentSink())
    run = pipeline.prepare_run(bundled, cond, replace(settings, cache_interval=1))
    cached = run.into(pipeline.LatentSink())
    assert (run.cache.stats.reused_calls, run.cache.stats.calls) == (29, 60)
    assert float((cached - plain).abs().mean() / plain.abs().mean()) < 0.08
