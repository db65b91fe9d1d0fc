"""The trainer's parts, without a training run: progressive levels against the sampler's table,
sigma sampling, the EDM loss, data indexing and skipping, still-image batches, checkpoint folders."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from longvid_core.networks.conditioning import SVDCond
from longvid_core.networks.denoiser import edm_preconditioning
from longvid_core.networks.losses import edm_denoising_loss, loss_weight
from longvid_core.sampling.schedules import INITIALIZATION, ROLLING, TERMINATION, get_sigmas_karras, progressive_table
from training import checkpointing, data, pixels
from training.latent_cache import LatentCache
from training.noise_levels import EXVIDEO_GRID_STEPS, ProgressiveLevels, level_to_sigma, sample_sigmas
from training.smoke import write_synthetic_video

# ---------------------------------------------------------------------------------------------
# Progressive noise levels


@pytest.mark.parametrize("window, chunk, steps", [(4, 2, 8), (6, 2, 3), (4, 1, 4)])
def test_progressive_levels_are_the_sampler_table_rows_plus_one_shift(window, chunk, steps):
    levels = ProgressiveLevels(window, chunk, steps, shift_scale=0.4)
    sigmas = get_sigmas_karras(steps, dtype=torch.float64)
    for clean_start in (False, True):
        table = progressive_table(window, chunk, steps, frames=window + chunk, clean_start=clean_start)
        assert levels.rows(clean_start) == list(table)
        for row in table:
            noise = levels.sample(3, torch.Generator().manual_seed(row.call), row=row)
            expected = torch.tensor([float(lv) for lv in row.levels for _ in range(chunk)], dtype=torch.float64)
            assert torch.equal(noise.table_levels, expected.expand(3, -1))
            # one delta = 0.4 * eps per video (the first draw of the generator), on every frame
            eps = torch.randn(3, generator=torch.Generator().manual_seed(row.call), dtype=torch.float64)
            assert torch.equal(noise.shift, 0.4 * eps)
            assert torch.equal(noise.levels, (expected + noise.shift[:, None]).clamp(0, steps - 1))
            # the clean overlapped chunk: in front, at the sampler's clean sigma, masked
            conditioning = chunk if row.clean_chunk else 0
            assert noise.conditioning == conditioning
            assert noise.conditioning_frames[:, :conditioning].all()
            assert not noise.conditioning_frames[:, conditioning:].any()
            assert (noise.sigma[:, :conditioning] == float(sigmas[steps - 1])).all()
            mapped = level_to_sigma(noise.levels, sigmas).float()
            assert torch.equal(noise.sigma[:, conditioning:], mapped)


def test_context_noise_draws_one_sigma_per_video_for_the_clean_chunk_only():
    clean_sigma = float(get_sigmas_karras(8)[-2])
    plain = ProgressiveLevels(4, 2, 8)
    noised = ProgressiveLevels(4, 2, 8, context_sigma=1.0)
    for row in noised.rows():
        # the same generator state gives the same table levels and shift: only the clean chunk differs
        a = plain.sample(64, torch.Generator().manual_seed(3), row=row)
        b = noised.sample(64, torch.Generator().manual_seed(3), row=row)
        assert torch.equal(a.levels, b.levels) and torch.equal(a.sigma[:, a.conditioning:], b.sigma[:, b.conditioning:])
        assert not a.conditioning_noised and b.conditioning_noised == (b.conditioning > 0)
        if b.conditioning:
            context = b.sigma[:, :b.conditioning].double()
            assert (context == context[:, :1]).all(), "one context sigma per video, on every clean frame"
            assert (context >= clean_sigma * (1 - 1e-6)).all() and (context <= 1.0 + 1e-6).all()
            assert context.unique().numel() > 32, "drawn per video"
            logs = context[:, 0].log()  # log-uniform over [clean_sigma, 1]: mean of ln at the midpoint
            assert abs(logs.mean().item() - math.log(clean_sigma) / 2) < 0.6
    for bad in (-0.5, 0.001):
        with pytest.raises(ValueError, match="context_sigma must be 0 .* above the smallest sampler sigma"):
            ProgressiveLevels(4, 2, 8, context_sigma=bad)


def test_without_shift_the_sigmas_are_exactly_the_sampler_sigmas():
    levels = ProgressiveLevels(4, 2, 8, shift_scale=0.0)
    sigmas = get_sigmas_karras(8)
    for row in levels.rows():
        noise = levels.sample(2, torch.Generator().manual_seed(0), row=row)
        conditioning = noise.conditioning
        expected = torch.tensor([sigmas[lv].item() for lv in row.levels for _ in range(2)])
        assert torch.equal(noise.sigma[0, conditioning:], expected)


def test_fractional_levels_follow_the_karras_curve():
    steps, rho = 8, 7.0
    sigmas = get_sigmas_karras(steps, dtype=torch.float64)
    levels = torch.tensor([0.0, 0.25, 2.5, 6.9, 7.0], dtype=torch.float64)
    lo, hi = 0.002 ** (1 / rho), 700.0 ** (1 / rho)
    curve = (hi + levels / (steps - 1) * (lo - hi)) ** rho
    assert torch.allclose(level_to_sigma(levels, sigmas), curve, rtol=1e-12)
    with pytest.raises(ValueError, match=r"levels must lie in \[0, S-1\]"):
        level_to_sigma(torch.tensor([7.5]), sigmas)


def test_rows_cover_every_stage_and_window_frames_follow_the_clean_chunk():
    levels = ProgressiveLevels(4, 2, 4, variable_length_fraction=0.5, clean_start_fraction=0.0)
    gen = torch.Generator().manual_seed(0)
    stages = {levels.choose_row(gen).stage for _ in range(200)}
    assert stages == {INITIALIZATION, ROLLING, TERMINATION}
    first = levels.sample(1, gen, row=levels.rows(False)[0])  # initialization: no clean chunk
    assert levels.window_frames(first, 6) == slice(0, 2)
    steady = [r for r in levels.rows(False) if r.stage == ROLLING and r.clean_chunk][0]
    noise = levels.sample(1, gen, row=steady)
    assert noise.frames == 6 and levels.window_frames(noise, 6) == slice(0, 6)
    last = levels.sample(1, gen, row=levels.rows(False)[-1])  # termination: clean chunk + one chunk
    assert levels.window_frames(last, 6) == slice(2, 6)


def test_sigma_sampling():
    gen = torch.Generator().manual_seed(0)
    grid = set(get_sigmas_karras(EXVIDEO_GRID_STEPS, dtype=torch.float64)[:-1].float().tolist())
    assert set(sample_sigmas(64, gen, "karras1000").tolist()) <= grid
    logs = sample_sigmas(4000, gen, "lognormal", p_mean=0.7, p_std=1.6).log()
    assert abs(logs.mean().item() - 0.7) < 0.1 and abs(logs.std().item() - 1.6) < 0.1


# ---------------------------------------------------------------------------------------------
# The EDM loss


def _fake_denoiser(network):
    """SVD's preconditioning around a stand-in network output F(x)."""
    def denoise(x, sigma, cond):
        c_skip, c_out, _, _ = (c[..., None, None, None] for c in edm_preconditioning(sigma))
        return c_skip * x + c_out * network(x)
    return denoise


def test_edm_weighting_equals_the_raw_network_error():
    gen = torch.Generator().manual_seed(0)
    x0, noise, other = (torch.randn(2, 3, 4, 4, 4, generator=gen) for _ in range(3))
    sigma = torch.tensor([[0.1, 1.0, 20.0], [0.5, 2.0, 300.0]])
    cond = SVDCond(torch.zeros(2, 1, 8), torch.zeros(2, 4, 4, 4), torch.zeros(2, 3))
    result = edm_denoising_loss(_fake_denoiser(lambda x: other), x0, sigma, noise, cond, weighting="edm")
    # F's ideal output: (x0 - c_skip x) / c_out
    c_skip, c_out, _, _ = (c[..., None, None, None] for c in edm_preconditioning(sigma))
    x = x0 + sigma[..., None, None, None] * noise
    ideal = (x0 - c_skip * x) / c_out
    assert torch.allclose(result.loss, (other - ideal).square().mean(), rtol=1e-4)
    ratio = loss_weight(sigma, "exvideo") ** 2 / loss_weight(sigma, "edm")
    assert torch.allclose(ratio, torch.ones_like(ratio))


def test_conditioning_frames_go_in_clean_and_do_not_count():
    gen = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(1, 4, 4, 4, 4, generator=gen), torch.randn(1, 4, 4, 4, 4, generator=gen)
    mask = torch.tensor([[True, True, False, False]])
    seen = {}

    def denoise(x, sigma, cond):
        seen["x"] = x
        out = x0.clone()
        out[:, 2:] += 1.0  # error 1 on the counted frames
        out[:, :2] += 100.0  # a huge error on the masked frames must not count
        return out

    cond = SVDCond(torch.zeros(1, 1, 8), torch.zeros(1, 4, 4, 4), torch.zeros(1, 3))
    result = edm_denoising_loss(denoise, x0, torch.full((1, 4), 1.0), noise, cond,
                                conditioning_frames=mask, weighting="unit")
    assert torch.equal(seen["x"][:, :2], x0[:, :2]) and not torch.equal(seen["x"][:, 2:], x0[:, 2:])
    assert result.frames == 2 and result.loss.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="every frame is a conditioning frame"):
        edm_denoising_loss(denoise, x0, torch.full((1, 4), 1.0), noise, cond,
                           conditioning_frames=torch.ones(1, 4, dtype=torch.bool))


def test_noised_conditioning_frames_go_in_at_their_sigma_and_still_do_not_count():
    gen = torch.Generator().manual_seed(2)
    x0, noise = torch.randn(1, 4, 4, 4, 4, generator=gen), torch.randn(1, 4, 4, 4, 4, generator=gen)
    mask = torch.tensor([[True, True, False, False]])
    sigma = torch.tensor([[0.3, 0.3, 5.0, 5.0]])
    seen = {}

    def denoise(x, sigma, cond):
        seen["x"] = x
        out = x0.clone()
        out[:, :2] += 100.0  # masked frames never count, noised or not
        return out

    cond = SVDCond(torch.zeros(1, 1, 8), torch.zeros(1, 4, 4, 4), torch.zeros(1, 3))
    result = edm_denoising_loss(denoise, x0, sigma, noise, cond, conditioning_frames=mask,
                                noise_conditioning=True, weighting="unit")
    assert torch.allclose(seen["x"], x0 + sigma[..., None, None, None] * noise)
    assert result.frames == 2 and result.loss.item() == pytest.approx(0.0)


@pytest.mark.parametrize("context_sigma", [0.0, 0.8])
def test_batch_loss_gives_the_clean_chunk_clean_or_with_context_noise(context_sigma):
    from training.batches import Batch, batch_loss
    from training.config import TrainConfig

    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 4, 2, 2, generator=gen)
    cond = SVDCond(torch.zeros(2, 1, 8), torch.zeros(2, 4, 2, 2), torch.zeros(2, 3))
    config = TrainConfig(base="b", output_dir="o", data_dir="d", mode="progressive", frames=4, height=16, width=16,
                         progressive_window=3, progressive_chunk=1, progressive_steps=3,
                         progressive_context_sigma=context_sigma)
    levels = ProgressiveLevels(3, 1, 3, context_sigma=context_sigma)
    rolling = [row for row in levels.rows() if row.clean_chunk and row.stage == ROLLING][0]
    seen = {}

    def denoiser(x, sigma, image_embeds, concat_latent, added_time_ids):
        seen["x"], seen["sigma"] = x, sigma
        return torch.zeros_like(x)

    generator = torch.Generator().manual_seed(5)
    levels.sample = lambda batch, g, row=None, draw=levels.sample: draw(batch, g, row=rolling)
    batch_loss(denoiser, Batch(latents, cond, "video"), config, levels, generator)
    # replay the draws: the levels, then one standard normal per latent value
    replay = torch.Generator().manual_seed(5)
    noise_levels = ProgressiveLevels(3, 1, 3, context_sigma=context_sigma).sample(2, replay, row=rolling)
    noise = torch.randn(latents.shape, generator=replay)
    clean_x, clean_sigma = seen["x"][:, :1], seen["sigma"][:, :1]
    assert torch.equal(clean_sigma, noise_levels.sigma[:, :1])
    if context_sigma:
        assert (clean_sigma > 0.002).all()
        assert torch.allclose(clean_x, latents[:, :1] + clean_sigma[..., None, None, None] * noise[:, :1])
    else:
        assert torch.equal(clean_x, latents[:, :1])


def test_guide_frames_are_one_or_two_noisy_frames_given_clean_and_left_out_of_the_loss():
    from training.batches import Batch, batch_loss, with_guide_frames
    from training.config import TrainConfig

    sigma = torch.full((64, 5), 3.0)
    chunk = torch.zeros(64, 5, dtype=torch.bool)
    chunk[:, 0] = True  # a clean chunk in front stays as it is
    out, mask = with_guide_frames(sigma, chunk, 0.5, 0.002, torch.Generator().manual_seed(0))
    guided = mask & ~chunk
    per_clip = guided.sum(1)
    assert set(per_clip.tolist()) == {0, 1, 2} and 15 < int((per_clip > 0).sum()) < 49  # about half the clips
    assert mask[:, 0].all() and torch.equal(out[guided], torch.full((int(guided.sum()),), 0.002))
    assert torch.equal(out[~mask], sigma[~mask]) and torch.equal(sigma, torch.full((64, 5), 3.0))  # a copy
    # never the last counted frame: a two-frame clip with one clean frame keeps the other
    _, two = with_guide_frames(torch.ones(32, 2), None, 1.0, 0.002, torch.Generator().manual_seed(1))
    assert (two.sum(1) == 1).all()
    # in batch_loss (one level per clip): the guide frames go in exactly clean at sigma_min
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 4, 2, 2, generator=gen)
    cond = SVDCond(torch.zeros(3, 1, 8), torch.zeros(3, 4, 2, 2), torch.zeros(3, 3))
    config = TrainConfig(base="b", output_dir="o", data_dir="d", mode="full", frames=4, height=16, width=16,
                         guide_frame_fraction=1.0)
    seen = {}

    def denoiser(x, sigma, image_embeds, concat_latent, added_time_ids):
        seen["x"], seen["sigma"] = x, sigma
        return torch.zeros_like(x)

    loss = batch_loss(denoiser, Batch(latents, cond, "video"), config, None, torch.Generator().manual_seed(3))
    clean = seen["sigma"] == config.sigma_min
    assert (clean.sum(1) >= 1).all() and loss.frames == 12 - int(clean.sum())
    assert torch.equal(seen["x"][clean], latents[clean])
    with pytest.raises(ValueError, match=r"--guide-frame-fraction must be in \[0, 1\]; found 1.5"):
        TrainConfig(base="b", output_dir="o", data_dir="d", guide_frame_fraction=1.5).check()


# ---------------------------------------------------------------------------------------------
# Data


def test_conditioning_dropout_gives_dropped_clips_the_samplers_unconditional_branch():
    from training.batches import Batch, batch_loss, drop_conditioning
    from training.config import TrainConfig

    count = 4000
    cond = SVDCond(torch.randn(count, 1, 8) + 3, torch.randn(count, 4, 2, 2) + 3, torch.randn(count, 3))
    dropped = drop_conditioning(cond, 0.1, torch.Generator().manual_seed(0))
    gone = (dropped.image_embeds == 0).flatten(1).all(1)
    negative = cond.negative()
    # a dropped clip gets exactly SVDCond.negative() (what guided_denoise runs as uncond), the rest their own
    assert torch.equal(dropped.image_embeds[gone], negative.image_embeds[gone])
    assert torch.equal(dropped.concat_latent[gone], negative.concat_latent[gone])
    assert torch.equal(dropped.image_embeds[~gone], cond.image_embeds[~gone])
    assert torch.equal(dropped.concat_latent[~gone], cond.concat_latent[~gone])
    assert torch.equal(dropped.added_time_ids, cond.added_time_ids)
    assert 0.08 < gone.float().mean().item() < 0.12  # 10 % of 4,000 clips: 400 +- 19 (binomial sd)
    # per-frame conditioning (--condition-frame video) is dropped per clip across all its frames
    per_frame = SVDCond(torch.ones(6, 5, 1, 8), torch.ones(6, 5, 4, 2, 2), torch.zeros(6, 3))
    dropped = drop_conditioning(per_frame, 0.5, torch.Generator().manual_seed(1))
    clip_gone = (dropped.concat_latent == 0).flatten(1)
    assert torch.equal(clip_gone.all(1), clip_gone.any(1))
    assert torch.equal((dropped.image_embeds == 0).flatten(1).all(1), clip_gone.all(1))

    # batch_loss applies it after drawing sigma and noise, so the noise stays what it was without dropout
    latents = torch.randn(2, 3, 4, 2, 2)
    seen = []

    def denoiser(x, sigma, image_embeds, concat_latent, added_time_ids):
        seen.append((x, concat_latent))
        return torch.zeros_like(x)

    small = SVDCond(torch.ones(2, 1, 8), torch.ones(2, 4, 2, 2), torch.zeros(2, 3))
    for fraction in (0.0, 0.99):
        config = TrainConfig(base="b", output_dir="o", data_dir="d", mode="full", frames=3, height=16, width=16,
                             conditioning_dropout=fraction)
        batch_loss(denoiser, Batch(latents, small, "video"), config, None, torch.Generator().manual_seed(3))
    assert torch.equal(seen[0][0], seen[1][0])
    assert (seen[0][1] == 1).all() and (seen[1][1] == 0).all()
    with pytest.raises(ValueError, match="--conditioning-dropout must be in"):
        TrainConfig(base="b", output_dir="o", data_dir="d", mode="full", conditioning_dropout=1.0).check()


def test_unreadable_short_and_missing_videos_are_skipped_with_a_reason(tmp_path):
    write_synthetic_video(tmp_path / "good.mp4", frames=9, height=16, width=16)
    write_synthetic_video(tmp_path / "short.webm", frames=3, height=16, width=16)
    (tmp_path / "garbage.mov").write_bytes(os.urandom(2000))
    whole = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "metadata.csv").write_text(
        "path,fps,caption\ngood.mp4,24,a square\nshort.webm,,\ngarbage.mov,,\ntruncated.mp4,,\nmissing.mp4,,\n")
    entries, missing = data.find_videos(tmp_path)
    usable, skipped = data.index_videos(entries, frames=4, stride=2)
    reasons = {Path(s.path).name: s.reason for s in [*missing, *skipped]}
    assert [v.path.name for v in usable] == ["good.mp4"] and usable[0].fps == 24.0
    assert "too short: 3 frames; a clip of 4 frames at stride 2 needs 7" in reasons["short.webm"]
    assert reasons["garbage.mov"].startswith("unreadable")
    assert "not found" in reasons["missing.mp4"]
    assert set(reasons) == {"short.webm", "garbage.mov", "truncated.mp4", "missing.mp4"}


def test_a_clip_that_fails_when_decoded_is_replaced_and_reported(tmp_path):
    write_synthetic_video(tmp_path / "a.mp4", frames=6, height=16, width=16)
    write_synthetic_video(tmp_path / "b.mp4", frames=6, height=16, width=16, seed=1)
    (a_info, b_info), _ = data.index_videos(data.find_videos(tmp_path)[0], frames=4, stride=1)
    liar = data.VideoInfo(a_info.entry, 400, a_info.fps, 16, 16)  # claims more frames than it has
    dataset = data.ClipDataset([liar, b_info], data.ClipSpec(4, 1, 16, 16), seed=0)
    samples = [dataset[g] for g in range(4)]
    failed = [s for s in samples if s.failures]
    assert failed and all(Path(s.path).name == "b.mp4" for s in failed)
    assert "too short" in failed[0].failures[0].reason
    assert all(s.pixels.shape == (4, 16, 16, 3) and s.pixels.dtype == torch.uint8 for s in samples)


def test_clip_pixels_order_and_motion(tmp_path):
    from training.smoke import synthetic_frames

    path = write_synthetic_video(tmp_path / "v.mov", frames=12, height=32, width=48, seed=2)
    clip = pixels.read_clip(path, start=2, frames=3, stride=3, height=16, width=16)
    assert clip.shape == (3, 16, 16, 3)
    source = pixels.read_clip(path, start=0, frames=12, stride=1, height=32, width=48)
    assert torch.equal(pixels.read_clip(path, 2, 3, 3, 32, 48), source[[2, 5, 8]])
    # H.264 at this size is lossy, but the decoded frames follow the written ones
    written = torch.from_numpy(synthetic_frames(12, 32, 48, seed=2)).float()
    assert (source.float() - written).abs().mean() < 12
    still = clip[:1].expand(5, -1, -1, -1)
    assert pixels.motion_score(still) == 0.0 and pixels.motion_bucket_from_score(0.0) == 0
    assert pixels.motion_bucket_from_score(pixels.motion_score(source)) > 0
    assert pixels.motion_bucket_from_score(1.0) == 127


def test_fixed_clip_coverage_counts_the_clips_and_source_frames_a_cached_run_can_see(tmp_path):
    """With --cache-dir clip starts are fixed, so the trainer reports how much of the data a run can
    ever see (one clip per video = only each video's first frames)."""
    write_synthetic_video(tmp_path / "v.mp4", frames=12, height=16, width=16, seed=4)
    (info,), _ = data.index_videos(data.find_videos(tmp_path)[0], frames=4, stride=1)
    cache = LatentCache(tmp_path / "cache", "base")
    coverage = lambda spec, clips, cache=cache: data.ClipDataset(  # noqa: E731
        [info, info], spec, seed=0, clips_per_video=clips, cache=cache).fixed_clip_coverage()
    assert coverage(data.ClipSpec(4, 1, 16, 16), 1) == (2, 8, 24)  # frames 0-3 of each video
    assert coverage(data.ClipSpec(4, 1, 16, 16), 3) == (6, 24, 24)  # starts 0, 4, 8
    assert coverage(data.ClipSpec(4, 2, 16, 16), 2) == (4, 16, 24)  # starts 0, 5; every other frame
    assert coverage(data.ClipSpec(4, 1, 16, 16), 1, cache=None) is None  # random starts: all of it


def test_sample_order_is_a_seeded_permutation_split_over_processes():
    videos = [data.VideoInfo(data.VideoEntry(Path(f"v{i}.mp4")), 10, 30.0, 16, 16) for i in range(5)]
    dataset = data.ClipDataset(videos, data.ClipSpec(4, 1, 16, 16), seed=3)
    epoch = [dataset.item_of(g) for g in range(5)]
    assert sorted(epoch) == [0, 1, 2, 3, 4] and epoch == [dataset.item_of(g) for g in range(5)]
    rank0, rank1 = iter(data.RankBatches(2, 0, 2, start_batch=3)), iter(data.RankBatches(2, 1, 2, start_batch=3))
    assert next(rank0) == [12, 13] and next(rank1) == [14, 15] and next(rank0) == [16, 17]


@pytest.mark.parametrize("condition_frame", ["clip", "video"])
def test_condition_frame_picks_the_picture_each_clip_is_conditioned_on_and_the_cache_keeps_it(tmp_path,
                                                                                              condition_frame,
                                                                                              monkeypatch):
    """``--condition-frame video``: a clip from the middle of a video is conditioned on the video's
    first frame (as every window of a long rolling sample is), not on its own; cached entries keep
    that picture and have keys of their own."""
    from longvid_core.evaluation.tiny import tiny_svd
    from training.batches import video_batch
    from training.config import TrainConfig

    path = write_synthetic_video(tmp_path / "v.mp4", frames=12, height=16, width=16, seed=4)
    (info,), _ = data.index_videos(data.find_videos(tmp_path)[0], frames=4, stride=1)
    spec = data.ClipSpec(4, 1, 16, 16)
    cache = LatentCache(tmp_path / "cache", "base")
    dataset = data.ClipDataset([info], spec, seed=0, clips_per_video=3, cache=cache,
                               condition_frame=condition_frame)
    samples = sorted((dataset[g] for g in range(3)), key=lambda s: s.start)
    assert [s.start for s in samples] == [0, 4, 8]
    video_first = pixels.read_clip(path, 0, 1, 1, 16, 16)[0]
    for sample in samples:
        expected = video_first if condition_frame == "video" else sample.pixels[0]
        assert torch.equal(sample.condition_frame, expected)
    assert not torch.equal(samples[2].pixels[0], video_first)  # the clip's own first frame differs

    model = tiny_svd(0)
    config = TrainConfig(base="b", output_dir="o", data_dir="d", mode="full,progressive", frames=4, height=16,
                         width=16, progressive_window=3, progressive_chunk=1, progressive_steps=3,
                         condition_frame=condition_frame)
    fresh = video_batch(model, config, samples, cache, torch.device("cpu"), micro_step=0)
    reloaded = sorted((dataset[g] for g in range(3)), key=lambda s: s.start)
    assert all(s.cached is not None and s.pixels is None for s in reloaded)
    assert all(torch.equal(a.condition_frame, b.condition_frame) for a, b in zip(samples, reloaded))
    again = video_batch(model, config, reloaded, cache, torch.device("cpu"), micro_step=0)
    assert torch.equal(fresh.cond.concat_latent, again.cond.concat_latent)
    first = model.encode_image(video_first[None].float() / 255.0, fps=7, motion_bucket_id=127, noise_aug_strength=0.0)
    same_as_first = [torch.allclose(fresh.cond.concat_latent[k], first.concat_latent[0]) for k in range(3)]
    assert same_as_first == ([True] * 3 if condition_frame == "video" else [True, False, False])
    # windows that start a video (no clean chunk) are conditioned on the clip's own first frame
    if condition_frame == "clip":
        assert fresh.start_cond is None
    else:
        # encoded on first use only: a batch that draws a row with a clean chunk never pays for it
        import training.batches as batches_module

        calls = []
        real_encode = batches_module.encode_condition
        monkeypatch.setattr(batches_module, "encode_condition", lambda *args: calls.append(args) or real_encode(*args))
        lazy = video_batch(model, config, reloaded, cache, torch.device("cpu"), micro_step=0)
        before = len(calls)
        start = lazy.start_cond
        assert len(calls) == before + 2  # samples 1 and 2 start later in the video than frame 0
        assert lazy.start_cond is start and len(calls) == before + 2
        monkeypatch.undo()
        assert torch.equal(start.concat_latent, fresh.start_cond.concat_latent)
        for k, sample in enumerate(samples):
            own = model.encode_image(sample.pixels[0][None].float() / 255.0, fps=7, motion_bucket_id=127,
                                     noise_aug_strength=0.0)
            assert torch.allclose(fresh.start_cond.concat_latent[k], own.concat_latent[0])
        seen = []

        def denoiser(x, sigma, image_embeds, concat_latent, added_time_ids):
            seen.append(concat_latent)
            return torch.zeros_like(x)

        from training.batches import batch_loss
        from training.noise_levels import ProgressiveLevels

        levels = ProgressiveLevels(window=3, chunk=1, steps=3)
        generator = torch.Generator().manual_seed(0)
        rows = {}
        while len(rows) < 2:
            seen.clear()
            state = generator.get_state()
            clean_chunk = bool(levels.sample(3, generator).conditioning)
            generator.set_state(state)
            batch_loss(denoiser, fresh, config, levels, generator)
            rows[clean_chunk] = seen[0]
        assert torch.equal(rows[False], fresh.start_cond.concat_latent)
        assert torch.equal(rows[True], fresh.cond.concat_latent)
        # without progressive rows no window starts a video: no second cond is encoded
        ordinary = TrainConfig(base="b", output_dir="o", data_dir="d", mode="full", frames=4, height=16, width=16,
                               condition_frame=condition_frame)
        assert video_batch(model, ordinary, samples, None, torch.device("cpu"), micro_step=0).start_cond is None
    other = "clip" if condition_frame == "video" else "video"
    assert cache.key(path, 4, 4, 1, 16, 16, condition_frame) != cache.key(path, 4, 4, 1, 16, 16, other)
    with pytest.raises(ValueError, match="condition_frame must be 'clip' or 'video'; found 'last'"):
        data.ClipDataset([info], spec, seed=0, condition_frame="last")


def test_still_batch_is_copies_of_one_picture_with_zero_motion():
    from longvid_core.evaluation.tiny import tiny_svd
    from training.batches import still_batch
    from training.config import TrainConfig

    config = TrainConfig(base="b", output_dir="o", data_dir="d", exvideo_frames=8, frames=5, height=16, width=16)
    picture = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = still_batch(tiny_svd(0), config, [(picture, 30.0, 0)], torch.device("cpu"), micro_step=0)
    assert batch.latents.shape == (1, 5, 4, 8, 8) and batch.kind == "image"
    assert all(torch.equal(batch.latents[0, 0], batch.latents[0, k]) for k in range(5))
    assert batch.cond.added_time_ids.tolist() == [[29.0, 0.0, 0.0]]  # fps - 1, motion bucket 0, no noise aug


# ---------------------------------------------------------------------------------------------
# Checkpoint folders


def _fake_save(output, step, keep_last=2):
    save = checkpointing.Save(output, step)
    save.begin()
    (save.staging / "extension.safetensors").write_bytes(b"weights")
    state = {"format": checkpointing.STATE_FORMAT, "step": step}
    checkpointing.write_json(save.state_dir / checkpointing.STATE_FILE, state)
    return save.commit(keep_last)


def test_checkpoint_folders_latest_pointer_and_pruning(tmp_path):
    for step in (1, 2, 3):
        _fake_save(tmp_path, step)
    root = tmp_path / checkpointing.CHECKPOINTS
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000002", "step-00000003"]
    assert checkpointing.resolve_resume(tmp_path, "latest") == root / "step-00000003"
    assert checkpointing.resolve_resume(tmp_path, "") is None
    # a save that dies before its rename leaves a staging folder: invisible, and removed by the next save
    stale = checkpointing.Save(tmp_path, 4)
    stale.begin()
    assert checkpointing.latest_checkpoint(root) == root / "step-00000003"
    _fake_save(tmp_path, 5)
    assert not stale.staging.exists()
    # a pointer to a folder that is gone falls back to the newest complete one
    (root / "latest").write_text("step-00000009\n")
    assert checkpointing.latest_checkpoint(root) == root / "step-00000005"
    with pytest.raises(FileNotFoundError, match="expected a checkpoint folder"):
        checkpointing.resolve_resume(tmp_path, str(tmp_path / "nowhere"))
    assert json.loads((root / "step-00000005" / "trainer_state" / "state.json").read_text())["step"] == 5


def _small_model_script(name: str):
    """tools/small_model/<name>.py as a module (the scripts are not part of the package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "tools" / "small_model" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_for_test", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_train_vae_keeps_the_encoder_when_only_the_decoder_is_tuned_and_assemble_base_loads(tmp_path):
    from longvid_core.weights.checkpoint_io import open_tensors
    from longvid_core.weights.loading import load_svd

    train_vae = _small_model_script("train_vae")
    tiny = ["--steps", "1", "--clips", "1", "--frames", "2", "--size", "16"]
    first, decoder_only = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    assert train_vae.main(["--out", str(first), "--channels", "32", "32", *tiny]) == 0
    assert train_vae.main(["--out", str(decoder_only), "--decoder-from", str(first), *tiny]) == 0
    a, b = open_tensors(first), open_tensors(decoder_only)
    assert a.metadata["config"] == b.metadata["config"]
    encoder = [k for k in a if k.startswith("encoder.")]
    assert encoder and all(torch.equal(a[k], b[k]) for k in encoder)  # --decoder-from: latent space kept
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))

    base = tmp_path / "base.safetensors"  # build.sh's next step: the VAE in an untrained SGM base
    assert _small_model_script("assemble_base").main(["--vae", str(first), "--out", str(base)]) == 0
    vae = load_svd(base).vae.state_dict()
    assert all(torch.equal(vae[k], a[k]) for k in encoder)


# ---------------------------------------------------------------------------------------------
# Rollout batches


def _oracle_rollout(periods, window=6, chunk=2, steps=6):
    """Rollout with a denoiser that returns the true frames of its window (the window always ends
    at the clip's last frame in these rows); records each call's sigmas and grad mode."""
    from training.rollout import rollout_loss

    levels = ProgressiveLevels(window, chunk, steps)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, chunk + window, 4, 2, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(latents.shape, generator=gen, dtype=torch.float64)
    cond = SVDCond(torch.zeros(2, 1, 8), torch.zeros(2, 4, 2, 2), torch.zeros(2, 3))
    calls = []

    def oracle(x, sigma, c):
        calls.append((x.clone(), sigma.clone(), torch.is_grad_enabled()))
        return latents[:, -x.shape[1]:].clone().requires_grad_(torch.is_grad_enabled())

    loss = rollout_loss(oracle, latents, cond, levels, periods, noise)
    return levels, latents, noise, calls, loss


@pytest.mark.parametrize("periods", [1, 2])
def test_rollout_runs_the_samplers_rows_from_noised_true_frames_then_trains_one_call(periods):
    levels, latents, noise, calls, loss = _oracle_rollout(periods)
    table = progressive_table(6, 2, 6, frames=8)
    rows = list(table)
    first = [r.call for r in rows if r.stage == ROLLING and r.clean_chunk][0]
    expected = rows[first:first + periods * table.chunk_spacing + 1]
    sigmas = levels.sigmas
    assert len(calls) == len(expected) == periods * 2 + 1
    for (x, sigma, grad), row in zip(calls, expected):
        # the sampler's row: clean chunk in front at clean_sigma, each chunk at its table level
        want = [levels.clean_sigma] * 2 + [float(sigmas[lv]) for lv in row.levels for _ in range(2)]
        assert torch.allclose(sigma, torch.tensor(want, dtype=torch.float32).expand(2, -1))
        # an exact denoiser keeps every noisy frame on x0 + sigma * noise (Euler on the true x0), and
        # the finished chunk in front is the true frames
        frames = [i for m in row.chunks for i in table.chunk_frames(m)]
        start = frames[0] - 2
        assert torch.allclose(x[:, :2], latents[:, start:start + 2])
        assert torch.allclose(x[:, 2:], latents[:, frames] + torch.tensor(
            [float(sigmas[lv]) for lv in row.levels for _ in range(2)], dtype=torch.float64)[:, None, None, None]
            * noise[:, frames])
        assert grad == (row is expected[-1])  # only the trained call carries gradients
    assert float(loss.loss.detach()) == 0.0 and loss.frames == 2 * len(expected[-1].levels) * 2


def test_rollout_context_is_the_models_own_output_and_the_loss_asks_for_the_truth():
    from training.rollout import rollout_loss, rollout_rows, rollout_state

    levels = ProgressiveLevels(6, 2, 6)
    latents = torch.randn(1, 8, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(2))
    cond = SVDCond(torch.zeros(1, 1, 8), torch.zeros(1, 4, 2, 2), torch.zeros(1, 3))

    def zeros(x, sigma, c):
        return torch.zeros_like(x)

    context, noisy, row = rollout_state(zeros, latents, cond, levels, 1, noise)
    assert context.abs().max() < 1e-6  # Euler to sigma 0 lands on the prediction (up to float32 rounding)
    assert row == rollout_rows(levels, 1)[1] and row.first_chunk == 2 and noisy.shape[1] == 4
    loss = rollout_loss(zeros, latents, cond, levels, 1, noise, weighting="unit")
    # unit weighting: the mean squared true latent over the loss row's frames (4..7), context left out
    assert torch.allclose(loss.loss, latents[:, 4:].square().mean())
    with pytest.raises(ValueError, match=r"rollout periods must be in \[1, 2\]"):
        rollout_rows(levels, 3)
    with pytest.raises(ValueError, match="a rollout needs clips of chunk \\+ window = 8 frames; found 6"):
        rollout_state(zeros, latents[:, :6], cond, levels, 1, noise[:, :6])


def test_batch_loss_takes_the_rollout_fraction_of_video_batches_and_checks_its_settings():
    from training.batches import Batch, batch_loss
    from training.config import TrainConfig

    latents = torch.randn(2, 8, 4, 2, 2)
    cond = SVDCond(torch.zeros(2, 1, 8), torch.zeros(2, 4, 2, 2), torch.zeros(2, 3))
    levels = ProgressiveLevels(6, 2, 6)
    calls = []

    def denoiser(x, sigma, image_embeds, concat_latent, added_time_ids):
        calls.append(torch.is_grad_enabled())
        return torch.zeros_like(x)

    def run(fraction, kind="video", seed=0):
        calls.clear()
        config = TrainConfig(base="b", output_dir="o", data_dir="d", mode="full,progressive", height=16, width=16,
                             progressive_window=6, progressive_chunk=2, progressive_steps=6,
                             progressive_rollout_fraction=fraction)
        config.check()
        batch_loss(denoiser, Batch(latents, cond, kind), config, levels, torch.Generator().manual_seed(seed))
        return len(calls)

    assert run(0.0) == 1 and run(1.0, kind="image") == 1  # stills are never rolled out
    assert run(1.0) in (3, 5) and calls == [False] * (len(calls) - 1) + [True]
    rolled = [run(0.5, seed=s) > 1 for s in range(40)]
    assert 8 < sum(rolled) < 32
    base = dict(base="b", output_dir="o", data_dir="d", height=16, width=16, progressive_window=6,
                progressive_chunk=2, progressive_steps=6)
    with pytest.raises(ValueError, match="add progressive to --mode"):
        TrainConfig(mode="full", progressive_rollout_fraction=0.5, **base).check()
    with pytest.raises(ValueError, match=r"--progressive-rollout-periods must be in \[1, 2\].*found 3"):
        TrainConfig(mode="full,progressive", progressive_rollout_fraction=0.5, progressive_rollout_periods=3,
                    **base).check()
    with pytest.raises(ValueError, match=r"--progressive-rollout-fraction must be in \[0, 1\]; found 1.5"):
        TrainConfig(mode="full,progressive", progressive_rollout_fraction=1.5, **base).check()
