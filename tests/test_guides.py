"""Guide frames (longvid_core.sampling.guides): at strength 1 the final latent at a guide's frame is
the guide's latent in every mode; below 1 the frame is held for the first round(s * S) steps only;
guides add no model call; loops close on their first frame; bad guides are refused before any call."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from longvid_core import pipeline, sampling
from longvid_core.evaluation.tiny import tiny_svd
from longvid_core.problems import InputError
from longvid_core.sampling import Guide, frame_noise
from longvid_core.sampling.guides import HeldFrames
from longvid_core.sampling.schedules import get_sigmas_karras
from tests.test_samplers import FRAME, NO_CFG, Recorder, frame_tags, make_cond, mixing_predict

F64 = torch.float64
STEPS = 4


def guide_latent(tag: float) -> torch.Tensor:
    return torch.full(FRAME, tag, dtype=F64) + 0.01 * torch.arange(FRAME[-1], dtype=F64)


# every mode and variant the samplers have: (iterator, its keyword arguments, frames, prefix frames)
MODES = {
    "progressive": (sampling.iter_progressive, dict(window=4, chunk=2), 11, 0),
    "progressive_partitions_lookahead": (sampling.iter_progressive, dict(window=4, chunk=1, partitions=2,
                                                                          lookahead=True), 9, 0),
    "progressive_context_sigma": (sampling.iter_progressive, dict(window=4, chunk=2, context_sigma=0.1), 10, 0),
    "progressive_prefix": (sampling.iter_progressive, dict(window=4, chunk=2), 12, 3),
    "replacement_without_noise": (sampling.iter_replacement, dict(window=5, condition_frames=2), 11, 0),
    "replacement_with_noise": (sampling.iter_replacement, dict(window=5, condition_frames=2,
                                                                renoise_condition=True), 11, 2),
    "full_sequence": (sampling.iter_full_sequence, {}, 7, 0),
    "context_windows": (sampling.iter_context_windows, dict(length=5, overlap=2), 12, 0),
}


def run(mode: str, guides=(), denoise=None, cfg=NO_CFG, progress=None):
    iterate, options, frames, prefix_frames = MODES[mode]
    prefix = torch.randn(1, prefix_frames, *FRAME[1:], generator=torch.Generator().manual_seed(1),
                         dtype=F64) if prefix_frames else None
    if prefix is not None:
        options = dict(options, prefix=prefix)
    denoise = denoise or Recorder(mixing_predict)
    stream = iterate(denoise, make_cond(0.5), frames, FRAME, get_sigmas_karras(STEPS, dtype=F64), seed=3,
                     dtype=F64, guides=guides, callback=None if progress is None else progress.append,
                     **options, **cfg)
    out = sampling.collect_frames(stream, frames, prefix)
    return out, denoise


def everywhere(mode: str, strength: float) -> list[Guide]:
    """A guide at every new frame (a refine)."""
    _, _, frames, prefix_frames = MODES[mode]
    return [Guide(k, guide_latent(0.1 * k), strength) for k in range(prefix_frames, frames)]


@pytest.mark.parametrize("mode", MODES)
def test_at_strength_one_the_video_passes_exactly_through_every_guide(mode):
    _, _, frames, prefix_frames = MODES[mode]
    at = sorted({prefix_frames, prefix_frames + 3, frames - 1})  # the first new frame, one inside, the last
    guides = [Guide(k, guide_latent(0.3 * (i + 1))) for i, k in enumerate(at)]
    free, free_calls = run(mode)
    progress = []
    guided, guided_calls = run(mode, guides, progress=progress)
    for guide in guides:
        assert torch.equal(guided[:, guide.frame], guide.latent), (mode, guide.frame)
    # holding a frame costs no call; calls on held frames only (progressive: a lone last chunk's
    # termination steps) are skipped, and the plan knows it
    assert len(guided_calls.calls) == progress[-1].total <= len(free_calls.calls)
    assert len(guided_calls.calls) == len(free_calls.calls) or mode.startswith("progressive")
    others = [k for k in range(prefix_frames, frames) if k not in at]
    assert not torch.equal(guided[:, others], free[:, others])  # the frames around a guide see it


@pytest.mark.parametrize("mode", ["progressive", "full_sequence", "context_windows"])
def test_guidance_scales_keep_exactness(mode):
    guides = [Guide(MODES[mode][2] - 1, guide_latent(-0.4))]
    guided, _ = run(mode, guides, cfg=dict(cfg=2.5, min_cfg=1.0))
    assert torch.equal(guided[:, guides[0].frame], guides[0].latent)


def test_strength_zero_is_no_guide_and_between_holds_the_first_steps():
    free, _ = run("full_sequence")
    none, _ = run("full_sequence", [Guide(3, guide_latent(0.7), strength=0.0)])
    assert torch.equal(free, none)
    # strength 0.5 of 4 steps: frame 3 enters calls 1 and 2 as guide + sigma * eps, then moves freely
    guide = guide_latent(0.7)
    _, recorder = run("full_sequence", [Guide(3, guide, strength=0.5)])
    sigmas = get_sigmas_karras(STEPS, dtype=F64).tolist()
    eps = frame_noise(3, 3, FRAME, dtype=F64)
    for call, (x, sigma, _) in enumerate(recorder.calls):
        held = guide + sigmas[call] * eps
        assert torch.allclose(x[:, 3], held, atol=1e-12) == (call <= 2), call
        assert sigma[0, 3].item() == sigmas[call]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_calls_on_held_frames_only_are_skipped_and_the_plan_counts_exactly(mode, strength):
    guides = everywhere(mode, strength)
    progress = []
    free, free_calls = run(mode)
    refined, calls = run(mode, guides, progress=progress)
    assert progress[-1].done == progress[-1].total == len(calls.calls)  # the plan's count is the calls made
    assert [p.done for p in progress] == sorted({p.done for p in progress}) or strength == 1.0
    assert progress[-1].frames_done == progress[-1].frames_total
    if strength == 1.0:  # nothing left to sample: the video is its guides, without a call
        assert not calls.calls
        for guide in guides:
            assert torch.equal(refined[:, guide.frame], guide.latent)
    else:
        assert 0 < len(calls.calls) < len(free_calls.calls)
    if mode.startswith(("full_sequence", "replacement", "context_windows")):
        # one level per call: the first round(s * S) steps of every window are skipped
        assert len(calls.calls) == round(len(free_calls.calls) * (1 - strength))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_skipping_held_calls_changes_no_frame(mode, strength, monkeypatch):
    guides = everywhere(mode, strength)
    guides = guides[:-1] if strength == 1.0 else guides  # one free frame: calls on it and its window remain
    skipped, fewer = run(mode, guides)
    monkeypatch.setattr(HeldFrames, "holds_all", lambda *args: False)  # make every call
    every, more = run(mode, guides)
    assert len(fewer.calls) < len(more.calls) or (mode, strength) == ("full_sequence", 1.0)  # one window
    assert torch.equal(skipped, every)


def test_a_guide_is_seen_by_the_frames_before_it_only_as_far_as_the_window_reaches():
    # progressive: a guide far ahead of the window cannot act on frames that leave before it enters
    free, _ = run("progressive")
    guided, _ = run("progressive", [Guide(10, guide_latent(1.0))])
    assert torch.equal(guided[:, :4], free[:, :4])
    assert torch.equal(guided[:, 10], guide_latent(1.0))


@pytest.mark.parametrize("guides, message", [
    ([Guide(11, guide_latent(0.1))], "guide frame: expected an index within the new frames 0..10"),
    ([Guide(2, guide_latent(0.1)), Guide(2, guide_latent(0.2))], "two guides at frame 2"),
    ([Guide(2, guide_latent(0.1), strength=1.5)], "guide strength: expected a number from 0 to 1"),
    ([Guide(2, guide_latent(0.1), strength=float("nan"))], "guide strength"),
    ([Guide(2, torch.zeros(1, 4, 3, 3, dtype=F64))], "guide latent: expected the video's latent shape"),
    ([Guide(2, torch.full(FRAME, float("inf"), dtype=F64))], "guide latent: expected finite values"),
])
def test_bad_guides_are_refused_before_any_call(guides, message):
    recorder = Recorder(mixing_predict)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        run("progressive", guides, denoise=recorder)
    assert not recorder.calls


def test_a_guide_in_the_prefix_is_refused():
    with pytest.raises(InputError, match=r"guide frame: .*frames 0\.\.2 are the given prefix"):
        run("progressive_prefix", [Guide(1, guide_latent(0.1))])


# ----------------------------------------------------------------------------------- the run


@pytest.fixture(scope="module")
def model():
    return tiny_svd(seed=0)


def picture(seed: int, size: int = 16) -> torch.Tensor:
    return torch.rand(1, size, size, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["progressive", "replacement_with_noise", "full_sequence", "context_windows"])
def test_the_pipeline_passes_through_pictures_and_loops(model, mode):
    keyframes, fitted = pipeline.condition_images(model, picture(0), 16, 16)
    guides, notes = pipeline.guides_from_images(model, torch.cat([picture(1), picture(2)]), [4, 9], [1.0, 1.0],
                                                16, 16)
    assert notes == []
    settings = pipeline.SamplingSettings(frames=10, mode=mode, window=4, chunk=2, steps=4, cfg=1.0)
    run = pipeline.prepare_run(model, keyframes, settings, guides=guides)
    latents = run.into(pipeline.LatentSink())
    for guide in guides:
        assert torch.equal(latents[:, guide.frame], guide.latent)
    # a loop: frame 0 and the frame after the last are the first picture's latent; N frames come out
    first, _ = pipeline.guides_from_images(model, fitted, [0], [1.0], 16, 16)
    looped = pipeline.prepare_run(model, keyframes, settings, loop_latent=first[0].latent)
    # the closing frame is sampled (a call on it alone, held, is skipped and the plan knows it)
    assert looped.plan == pipeline.plan_sampling(replace(settings, frames=11), 0, looped.guides)
    assert looped.plan.new_frames == 11
    assert looped.sampled_frames == 11 and looped.total_frames == 10
    out = looped.into(pipeline.LatentSink())
    assert out.shape[1] == 10 and torch.equal(out[:, 0], first[0].latent)


def test_pictures_of_another_shape_are_fitted_and_said_so(model):
    wide = torch.rand(1, 16, 32, 3, generator=torch.Generator().manual_seed(4))
    guides, notes = pipeline.guides_from_images(model, wide, [3], [1.0], 16, 16)
    assert guides[0].latent.shape == (1, 4, 8, 8)
    assert notes == ["guide picture 1 (32x16) was fitted to 16x16 as the conditioning image is: centre-cropped "
                     "to the aspect ratio, then resized"]


def test_a_loop_shorter_than_a_window_is_refused_before_sampling(model):
    keyframes, fitted = pipeline.condition_images(model, picture(0), 16, 16)
    first, _ = pipeline.guides_from_images(model, fitted, [0], [1.0], 16, 16)
    settings = pipeline.SamplingSettings(frames=5, mode="progressive", window=4, chunk=2, steps=4)
    with pytest.raises(InputError, match=r"^frames: expected at least window \+ chunk = 6 for a loop"):
        pipeline.prepare_run(model, keyframes, settings, loop_latent=first[0].latent)


# ----------------------------------------------------------------------------------- interpolate and refine


def test_auto_refines_progressive_weights_one_level_per_call_at_a_fraction_of_the_calls(model):
    from longvid_core.run import cascade
    from longvid_core.weights.trained_for import TrainedFor

    video = torch.rand(8, 16, 16, 3, generator=torch.Generator().manual_seed(8))
    keyframes, _ = pipeline.condition_images(model, video[:1], 16, 16)
    pulled, _ = cascade.refine_guides(model, video, 0.75, 16, 16)
    progressive = TrainedFor(progressive=True, clip_frames=6, window=4, chunk=2, steps=4)
    tiny = tiny_svd(seed=0)
    tiny.trained_for = progressive
    settings = pipeline.SamplingSettings(frames=8, window=12, chunk=4, steps=8, cfg=1.0)  # auto
    run_ = pipeline.prepare_run(tiny, keyframes, settings, guides=pulled)
    assert (run_.settings.mode, run_.settings.window, run_.settings.chunk, run_.settings.steps) == (
        "replacement_with_noise", 4, 2, 4)
    assert "a refine: every frame starts from its guide" in run_.chosen
    generating = pipeline.prepare_run(tiny, keyframes, settings)
    assert generating.settings.mode == "progressive"  # without guides: as trained
    assert run_.plan.denoiser_calls < generating.plan.denoiser_calls / 2
    # a frame left free, or a guide at strength 1, is not a refine
    assert pipeline.prepare_run(tiny, keyframes, settings, guides=pulled[:-1]).settings.mode == "progressive"
    assert not pipeline.is_refine([replace(g, strength=1.0) for g in pulled], 0, 8)
    assert pipeline.is_refine(pulled, 0, 8) and not pipeline.is_refine(pulled, 0, 9)
    assert torch.isfinite(run_.into(pipeline.LatentSink())).all()


def test_interpolation_keeps_every_input_frame_and_refine_at_one_changes_nothing(model):
    from longvid_core.run import cascade

    video = torch.rand(4, 16, 16, 3, generator=torch.Generator().manual_seed(8))
    keyframes, _ = pipeline.condition_images(model, video[:1], 16, 16)
    guides, notes = cascade.interpolation_guides(model, video, 3, 16, 16)
    assert [g.frame for g in guides] == [0, 3, 6, 9] and notes == []
    frames = cascade.interpolated_frames(4, 3)
    settings = pipeline.SamplingSettings(frames=frames, mode="progressive", window=4, chunk=2, steps=4, cfg=1.0)
    latents = pipeline.prepare_run(model, keyframes, settings, guides=guides).into(pipeline.LatentSink())
    assert latents.shape[1] == 10
    for guide in guides:
        assert torch.equal(latents[:, guide.frame], guide.latent)
    same, _ = cascade.refine_guides(model, video, 1.0, 16, 16)
    settings = replace(settings, frames=4, mode="replacement_with_noise")
    kept = pipeline.prepare_run(model, keyframes, settings, guides=same).into(pipeline.LatentSink())
    assert torch.equal(kept, torch.stack([g.latent for g in same], dim=1))
    pulled, _ = cascade.refine_guides(model, video, 0.5, 16, 16)
    refined = pipeline.prepare_run(model, keyframes, settings, guides=pulled).into(pipeline.LatentSink())
    assert not torch.equal(refined, kept)
    # the wider input is cropped like a conditioning image, and that is said once for the video
    wide = torch.rand(3, 16, 32, 3, generator=torch.Generator().manual_seed(9))
    assert cascade.refine_guides(model, wide, 0.5, 16, 16)[1] == [
        "the input video's 3 frames (32x16) were fitted to 16x16 as the conditioning image is: centre-cropped to "
        "the aspect ratio, then resized"]


@pytest.mark.parametrize("frames, factor, strength, message", [
    (1, 2, None, "input video: expected a video of at least 2 frames, found 1 frame(s)"),
    (5, 1, None, "factor: expected a whole number >= 2"),
    (5, 2.5, None, "factor: expected a whole number >= 2"),
    (5, None, 1.5, "strength: expected a number from 0 to 1"),
    (5, None, float("nan"), "strength: expected a number from 0 to 1"),
])
def test_bad_cascade_inputs(frames, factor, strength, message):
    from longvid_core.run.cascade import cascade_problem

    assert str(cascade_problem(frames, factor, strength)).startswith(message)


# ------------------------------------------------------------------- Time Reversal Fusion


def anchored(frame: int, tag: float) -> Guide:
    """A strength-1 guide that carries its picture's cond (an anchor)."""
    return Guide(frame, guide_latent(tag), 1.0, cond=make_cond(tag), method="time_reversal")


def test_time_reversal_runs_the_frames_before_an_anchor_backward_from_its_picture():
    progress = []
    out, recorder = run("full_sequence", [anchored(6, 0.75)], progress=progress)
    assert torch.equal(out[:, 6], guide_latent(0.75))
    assert len(recorder.calls) == 2 * STEPS == progress[-1].total  # forward + backward per step, planned
    for step in range(STEPS):
        (x_fwd, s_fwd, c_fwd), (x_bwd, s_bwd, c_bwd) = recorder.calls[2 * step:2 * step + 2]
        assert torch.equal(x_bwd, x_fwd[:, :7].flip(1))  # the window up to the anchor, reversed
        assert torch.equal(s_bwd, s_fwd[:, :7].flip(1))
        assert frame_tags(c_fwd, 7)[0] == 0.5 and frame_tags(c_bwd, 7) == [0.75] * 7  # the anchor's picture
    # the first step by hand: fused x0 = w * forward + (1 - w) * backward, w from 1 (frame 0) to 0 (anchor)
    (x, sigma, c_fwd), (_, _, c_bwd) = recorder.calls[:2]
    forward, backward = mixing_predict(x, sigma, c_fwd), mixing_predict(x[:, :7].flip(1), sigma[:, :7].flip(1),
                                                                         c_bwd).flip(1)
    w = torch.linspace(1, 0, 7, dtype=F64)[None, :, None, None, None]
    fused = forward.clone()
    fused[:, :7] = w * forward[:, :7] + (1 - w) * backward
    levels = get_sigmas_karras(STEPS, dtype=F64).tolist()
    expected = x + (x - fused) / levels[0] * (levels[1] - levels[0])
    assert torch.allclose(recorder.calls[2][0][:, :6], expected[:, :6], atol=1e-12)
    assert torch.equal(recorder.calls[2][0][:, 6], guide_latent(0.75) + levels[1] * frame_noise(3, 6, FRAME, dtype=F64))


def test_time_reversal_in_replacement_windows_and_its_plan():
    # windows of 5 with 2 condition frames: new frames 0-4, 5-7, 8-10; anchors at 3 and 9 (frame 5 is the
    # front of its window's new frames, so it has nothing to lead in and gets no backward call)
    guides = [anchored(3, 0.25), anchored(5, 0.375), anchored(9, 0.875)]
    progress = []
    out, recorder = run("replacement_without_noise", guides, progress=progress)
    for guide in guides:
        assert torch.equal(out[:, guide.frame], guide.latent)
    free, free_calls = run("replacement_without_noise")
    assert len(recorder.calls) == progress[-1].total == len(free_calls.calls) + 2 * STEPS
    backward = [call for call in recorder.calls if frame_tags(call[2], call[0].shape[1])[0] != 0.5]
    assert [call[0].shape[1] for call in backward] == [4] * STEPS + [4] * STEPS  # 0..3, then 6, 7 (context) + 8, 9
    assert [frame_tags(call[2], 1)[0] for call in backward] == [0.25] * STEPS + [0.875] * STEPS
    assert not torch.equal(out[:, :3], run("replacement_without_noise", [Guide(g.frame, g.latent) for g in guides])[0][:, :3])


@pytest.mark.parametrize("mode", ["progressive", "context_windows"])
def test_modes_with_mixed_or_fused_windows_hold_anchors_without_time_reversal(mode):
    guides = [anchored(6, 0.75)]
    held, held_calls = run(mode, [Guide(6, guide_latent(0.75))])
    anchored_out, anchored_calls = run(mode, guides)
    assert torch.equal(held, anchored_out) and len(held_calls.calls) == len(anchored_calls.calls)


def test_a_cond_of_another_batch_is_refused():
    bad = Guide(4, guide_latent(0.1), 1.0, cond=make_cond(0.1, batch=2))
    with pytest.raises(InputError, match="guide cond: expected one SVDCond of the picture, batch 1"):
        run("full_sequence", [bad])


def test_the_pipeline_makes_anchors_conditioned_like_the_run(model):
    keyframes, _ = pipeline.condition_images(model, picture(0), 16, 16, fps=12, motion_bucket_id=90,
                                             noise_aug_strength=0.05, seed=7)
    guides, _ = pipeline.guides_from_images(model, torch.cat([picture(1), picture(2)]), [4, 9], [1.0, 0.5], 16, 16,
                                            method="time_reversal", anchors_like=keyframes[0][1], seed=7)
    anchor = guides[0].cond
    assert guides[1].cond is None  # only strength-1 guides are anchors
    assert torch.equal(anchor.added_time_ids, keyframes[0][1].added_time_ids)
    alone, _ = pipeline.condition_images(model, picture(1), 16, 16, fps=12, motion_bucket_id=90,
                                         noise_aug_strength=0.05, seed=7)
    assert torch.allclose(anchor.image_embeds, alone[0][1].image_embeds)
    assert torch.allclose(anchor.concat_latent, alone[0][1].concat_latent)
    settings = pipeline.SamplingSettings(frames=10, mode="replacement_with_noise", window=4, chunk=2, steps=4, cfg=1.0)
    run = pipeline.prepare_run(model, keyframes, settings, guides=guides)
    held = pipeline.prepare_run(model, keyframes, settings, guides=[replace(g, cond=None) for g in guides])
    assert run.plan.denoiser_calls > held.plan.denoiser_calls  # the backward calls are planned
    calls = []
    latents = run.into(pipeline.LatentSink(), callback=calls.append)
    assert calls[-1].done == run.plan.denoiser_calls
    assert torch.equal(latents[:, 4], guides[0].latent)


# ------------------------------------------------------------------------- the clean method


@pytest.mark.parametrize("mode", list(MODES))
def test_clean_guides_are_shown_to_the_model_clean_and_still_reached_exactly(mode):
    _, _, frames, prefix_frames = MODES[mode]
    at = frames - 2
    guide = Guide(at, guide_latent(0.6), method="clean")
    held_out, held_calls = run(mode, [Guide(at, guide_latent(0.6))])
    out, recorder = run(mode, [guide])
    assert torch.equal(out[:, at], guide.latent)
    assert len(recorder.calls) == len(held_calls.calls)  # no call added
    smallest = get_sigmas_karras(STEPS, dtype=F64).tolist()[-2]
    seen = 0
    for x, sigma, _ in recorder.calls:  # wherever the model sees the guide's frame, it is the clean latent
        for position in range(x.shape[1]):
            if sigma[0, position].item() == smallest and torch.equal(x[:, position], guide.latent):
                seen += 1
    assert seen >= 1
    assert not torch.equal(out, held_out)


def test_auto_is_clean_in_progressive_and_one_level_windows_and_hold_in_context_windows():
    from longvid_core.sampling.guides import AUTO_METHOD, HeldFrames

    guide = Guide(5, guide_latent(0.2), cond=make_cond(0.2), method="auto")
    levels = get_sigmas_karras(STEPS, dtype=F64).tolist()
    assert AUTO_METHOD == {"progressive": "clean", "one_level": "clean", "context_windows": "hold"}
    progressive = HeldFrames([guide], levels, 0, FRAME, "progressive")
    one_level = HeldFrames([guide], levels, 0, FRAME, "one_level")
    windows = HeldFrames([guide], levels, 0, FRAME, "context_windows")
    assert set(progressive.clean) == {5} and not progressive.anchors
    assert set(one_level.clean) == {5} and not one_level.anchors
    explicit = HeldFrames([Guide(5, guide_latent(0.2), cond=make_cond(0.2), method="time_reversal")], levels, 0,
                          FRAME, "one_level")
    assert set(explicit.anchors) == {5} and not explicit.clean
    assert not windows.clean and not windows.anchors
    # below strength 1 every method only holds
    weak = HeldFrames([Guide(5, guide_latent(0.2), 0.5, make_cond(0.2), "auto")], levels, 0, FRAME, "progressive")
    assert not weak.clean and not weak.anchors and 5 in weak.hold


def test_weights_trained_with_guide_frames_have_auto_guides_shown_clean_in_every_mode():
    from longvid_core.weights.trained_for import TrainedFor

    model = tiny_svd(seed=0)
    cond, _ = pipeline.condition_images(model, torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0)),
                                        16, 16)
    guides, _ = pipeline.guides_from_images(model, torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(1)),
                                            [3, 7], [1.0, 1.0], 16, 16, method="auto")
    settings = pipeline.SamplingSettings(frames=8, mode="context_windows", window=4, chunk=2, steps=4, cfg=1.0)
    assert {g.method for g in pipeline.prepare_run(model, cond, settings, guides=guides).guides} == {"auto"}
    model.trained_for = TrainedFor(progressive=False, clip_frames=8, guide_frames=0.25)
    run_ = pipeline.prepare_run(model, cond, settings, guides=guides + [replace(guides[0], frame=5, method="hold")])
    assert [g.method for g in run_.guides] == ["clean", "clean", "hold"]  # a method asked for stays
    latents = run_.into(pipeline.LatentSink())
    assert torch.equal(latents[:, 3], guides[0].latent) and torch.equal(latents[:, 7], guides[1].latent)


def test_an_unknown_method_is_refused():
    with pytest.raises(InputError, match="guide method: expected one of auto, hold, clean, time_reversal"):
        run("progressive", [Guide(3, guide_latent(0.1), method="sideways")])
