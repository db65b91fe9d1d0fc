"""The generation pipeline: one run checked and planned before any model call, and its sinks."""

from dataclasses import replace

import pytest
import torch

from longvid_core import pipeline, sampling
from longvid_core.evaluation.tiny import tiny_svd
from longvid_core.networks.decoding import decode
from longvid_core.sampling.schedules import get_sigmas_karras


# ----------------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def model():
    return tiny_svd(seed=0)


def keyframes(model, size=16):
    image = torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(0))
    return pipeline.condition_images(model, image, size, size)[0]


class CountingModel:
    """The model with its denoiser calls counted."""

    def __init__(self, model):
        self.inner, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def denoise(self, x, sigma, cond):
        self.calls += 1
        return self.inner.denoise(x, sigma, cond)


SMALL = pipeline.SamplingSettings(7, "progressive", window=4, chunk=2, steps=4, cfg=1.5, min_cfg=1.0, seed=3)


def test_latents_are_the_samplers_own_and_the_plan_is_exact(model):
    counting = CountingModel(model)
    cond = keyframes(model)
    run = pipeline.prepare_run(counting, cond, SMALL)
    assert counting.calls == 0 and run.total_frames == 7
    latents = run.into(pipeline.LatentSink())
    assert counting.calls == run.plan.denoiser_calls == sampling.plan_progressive(7, window=4, chunk=2,
                                                                                  steps=4).denoiser_calls
    with torch.no_grad():
        expected = sampling.sample_progressive(model.denoise, cond, 7, run.frame_shape, get_sigmas_karras(4),
                                               window=4, chunk=2, seed=3, cfg=1.5, min_cfg=1.0)
    assert torch.equal(latents, expected)


def test_image_sink_decodes_as_the_decoder_does_and_reports_both_stages(model):
    cond = keyframes(model)
    latents = pipeline.generate(model, cond, SMALL, pipeline.LatentSink())
    seen = []
    frames = pipeline.generate(model, cond, SMALL, pipeline.ImageSink(window=4, overlap=1),
                               callback=lambda p: seen.append((p.stage, p.done, p.total)))
    assert torch.equal(frames, decode(model.vae, latents, window=4, overlap=1))
    stages = [stage for stage, _, _ in seen]
    assert stages.count("sampling") == pipeline.plan_sampling(SMALL).denoiser_calls
    assert ("decoding", 7, 7) in seen


def test_a_prefix_comes_first_bit_for_bit(model):
    cond = keyframes(model)
    prefix = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    latents = pipeline.generate(model, cond, SMALL, pipeline.LatentSink(), prefix=prefix)
    assert latents.shape == (1, 10, 4, 8, 8) and torch.equal(latents[:, :3], prefix)


def test_comfy_latents_round_trip_and_are_unscaled():
    scaled = torch.randn(1, 3, 4, 8, 8)
    comfy = pipeline.latents_to_comfy(scaled)
    assert comfy["samples"].shape == (3, 4, 8, 8)
    torch.testing.assert_close(comfy["samples"] * 0.18215, scaled[0])
    torch.testing.assert_close(pipeline.latents_from_comfy(comfy), scaled)
    with pytest.raises(ValueError, match=r"prefix: expected LATENT samples \[frames, 4, h, w\]; found \(3, 8, 8\)"):
        pipeline.latents_from_comfy({"samples": torch.zeros(3, 8, 8)}, "prefix")


@pytest.mark.parametrize("settings, prefix, message", [
    (dict(mode="full_sequence", frames=26), None, r"plain SVD was trained on clips of 25 frames\), found 26"),
    (dict(mode="full_sequence", frames=4), torch.zeros(1, 2, 4, 8, 8), "full_sequence mode cannot extend a video"),
    (dict(frames=4), torch.zeros(1, 2, 4, 4, 4), "prefix latents are 4x4 but the conditioning is 8x8"),
    (dict(frames=4, window=5, mode="progressive"), None, r"use window 4 or 6"),
    (dict(frames=4, mode="replacement_with_noise", context_sigma=0.2), None,
     "context noise is for progressive only"),
])
def test_impossible_runs_are_refused_before_any_model_call(model, settings, prefix, message):
    counting = CountingModel(model)
    with pytest.raises(ValueError, match=message):
        pipeline.prepare_run(counting, keyframes(model), pipeline.SamplingSettings(**{**dict(
            window=4, chunk=2, steps=4), **settings}), prefix)
    assert counting.calls == 0


def test_keyframes_past_the_end_and_sizes_are_refused(model):
    late = [(0, keyframes(model)[0][1]), (9, keyframes(model)[0][1])]
    with pytest.raises(ValueError, match=r"keyframe_starts: expected starts within.*found \[9\] past the end"):
        pipeline.prepare_run(model, late, SMALL)
    multiple = model.size_multiple
    with pytest.raises(ValueError, match=rf"width: expected a multiple of {multiple}.*found {multiple + 1}"):
        pipeline.check_size(model, multiple + 1, multiple)
    assert pipeline.size_problem(64, 128) is None
    assert "at least 128 px" in pipeline.size_problem(64, 128, 64, 128, extended=True)


# ----------------------------------------------------------------------------------- auto


def test_auto_runs_progressive_weights_as_trained_and_others_training_free(model):
    from longvid_core.weights.trained_for import TrainedFor

    settings = pipeline.SamplingSettings(7, window=4, chunk=2, steps=4, cfg=1.0, min_cfg=1.0)
    assert settings.mode == pipeline.AUTO
    chosen, why = pipeline.resolve_auto(model, settings)  # tiny_svd: no record, like svd_xt.safetensors
    assert chosen == pipeline.training_free(settings, pipeline.TRAINING_FREE) and "no progressive" in why
    pipeline.check_settings(chosen)  # a layout the samplers take
    model.trained_for = TrainedFor(progressive=True, clip_frames=10, window=8, chunk=2, steps=16)
    try:
        run = pipeline.prepare_run(model, keyframes(model), settings)
    finally:
        model.trained_for = None
    assert (run.settings.mode, run.settings.window, run.settings.steps, run.settings.partitions) == (
        "progressive", 8, 16, 1)
    assert run.chosen == "auto -> progressive: window 8, chunk 2, 16 steps (the model was fine-tuned progressively)"
    assert pipeline.resolve_auto(model, replace(settings, mode="context_windows"))[0].mode == "context_windows"


def test_training_free_options_grow_the_window_and_split_it():
    base = pipeline.SamplingSettings(240, "progressive", window=24, chunk=2, steps=24)
    split = pipeline.training_free(base, "partitioned_lookahead")
    assert (split.window, split.steps, split.partitions, split.lookahead) == (48, 24, 4, True)
    assert pipeline.training_free(base, "partitioned").partitions == 2
    assert pipeline.training_free(replace(base, window=2, steps=2), "partitioned_lookahead").partitions == 2
    assert pipeline.training_free(base, "context_windows").mode == "context_windows"


@pytest.mark.parametrize("name", list(pipeline.TRAINING_FREE_OPTIONS))
def test_training_free_settings_run_through_the_pipeline_as_planned(model, name):
    counting = CountingModel(model)
    base = pipeline.SamplingSettings(9, "progressive", window=4, chunk=2, steps=4, cfg=1.5, min_cfg=1.0)
    settings = pipeline.training_free(base, name)
    run = pipeline.prepare_run(counting, keyframes(model), settings)
    latents = run.into(pipeline.LatentSink())
    assert latents.shape == (1, 9, 4, 8, 8) and torch.isfinite(latents).all()
    assert counting.calls == run.plan.denoiser_calls


def test_context_windows_cannot_extend_a_video(model):
    with pytest.raises(ValueError, match="context_windows mode cannot extend a video"):
        pipeline.prepare_run(model, keyframes(model), pipeline.SamplingSettings(4, "context_windows", 4, 2, 4),
                             torch.zeros(1, 2, 4, 8, 8))
