"""LongVid's UNet against diffusers' reference, and its per-frame noise levels."""

import math

import pytest
import torch
from diffusers import UNetSpatioTemporalConditionModel

from longvid_core.networks.conditioning import SVDCond
from longvid_core.networks.denoiser import edm_preconditioning, svd_denoise
from longvid_core.networks.unet import BatchSlicedAttnProcessor
from tests.tiny import TINY_UNET, tiny_unet, unet_inputs


@pytest.fixture(scope="module")
def models():
    ours = tiny_unet()
    ref = UNetSpatioTemporalConditionModel(**TINY_UNET).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


def test_matches_diffusers_with_one_sigma_per_video(models):
    ours, ref = models
    sample, context, ids = unet_inputs()
    t = torch.tensor([0.3, -1.2])
    with torch.no_grad():
        expected = ref(sample, t, context, ids).sample
        got_b = ours(sample, t, context, ids)
        got_bf = ours(sample, t[:, None].expand(2, 5), context, ids)
    assert (got_b - expected).abs().max() <= 1e-5
    assert (got_bf - expected).abs().max() <= 1e-5


def test_odd_latent_size_matches_diffusers(models):
    ours, ref = models
    sample, context, ids = unet_inputs(h=6, w=10)
    t = torch.tensor([0.1, 0.1])
    with torch.no_grad():
        assert (ours(sample, t, context, ids) - ref(sample, t, context, ids).sample).abs().max() <= 1e-5


def test_per_frame_sigma_only_changes_its_own_frame_without_temporal_mixing():
    # With every time mixer fully spatial (sigmoid(mix) = 1), frames no longer see each other, so
    # frame k's output must equal a run where all frames have frame k's noise level.
    unet = tiny_unet()
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(60.0)
    sample, context, ids = unet_inputs(frames=4)
    levels = torch.tensor([[-1.0, 0.0, 0.5, 1.5], [1.5, 0.5, 0.0, -1.0]])
    with torch.no_grad():
        mixed = unet(sample, levels, context, ids)
        for k in range(4):
            single = unet(sample, levels[:, k], context, ids)
            assert torch.allclose(mixed[:, k], single[:, k], atol=1e-5)
            others = [j for j in range(4) if not torch.equal(levels[:, j], levels[:, k])]
            assert not torch.allclose(mixed[:, others], single[:, others], atol=1e-3)


def test_per_frame_sigma_reaches_every_frame_with_temporal_mixing(models):
    ours, _ = models
    sample, context, ids = unet_inputs(frames=4)
    base = torch.zeros(2, 4)
    bumped = base.clone()
    bumped[:, 2] = 1.0
    with torch.no_grad():
        a, b = ours(sample, base, context, ids), ours(sample, bumped, context, ids)
    change = (a - b).abs().flatten(2).amax(-1)  # [B, F]
    assert (change[:, 2] > 0).all()
    # the changed frame moves most; temporal layers carry a smaller effect to its neighbours
    assert (change.argmax(dim=1) == 2).all()


def test_per_frame_context_equals_broadcast_context(models):
    ours, _ = models
    sample, context, ids = unet_inputs()
    t = torch.tensor([0.2, 0.4])
    with torch.no_grad():
        a = ours(sample, t, context, ids)
        b = ours(sample, t, context[:, None].expand(-1, 5, -1, -1), ids[:, None].expand(-1, 5, -1))
    assert torch.equal(a, b)


def test_batch_sliced_attention_is_exact(models):
    ours, _ = models
    sample, context, ids = unet_inputs()
    t = torch.tensor([0.2, 0.4])
    with torch.no_grad():
        full = ours(sample, t, context, ids)
        ours.set_attn_processor(BatchSlicedAttnProcessor(batch_limit=7))
        try:
            sliced = ours(sample, t, context, ids)
        finally:
            ours.set_attention_backend("sdpa")
    assert torch.allclose(full, sliced, atol=1e-6)


def test_denoiser_is_edm_v_prediction_per_frame():
    # frames made independent (time mixers fully spatial) so each frame can be checked by hand
    # against diffusers' reference run with that frame's sigma for the whole clip
    ours = tiny_unet()
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.endswith("mix_factor"):
                p.fill_(60.0)
    ref = UNetSpatioTemporalConditionModel(**TINY_UNET).eval()
    ref.load_state_dict(ours.state_dict())
    sample, context, ids = unet_inputs(frames=3)
    x = sample[:, :, :4] * 3.0
    concat = sample[:, 0, 4:]
    cond = SVDCond(context, concat, ids)
    sigma = torch.tensor([[0.5, 2.0, 30.0], [700.0, 0.002, 1.0]])
    with torch.no_grad():
        x0 = svd_denoise(ours, x, sigma, cond)
        for b in range(2):
            for f in range(3):
                s = sigma[b, f].item()
                inp = torch.cat([x[b:b + 1] / math.sqrt(s * s + 1), concat[b:b + 1, None].expand(1, 3, -1, -1, -1)], 2)
                out = ref(inp, torch.tensor([0.25 * math.log(s)]), context[b:b + 1], ids[b:b + 1]).sample
                expected = out[0, f] * (-s / math.sqrt(s * s + 1)) + x[b, f] / (s * s + 1)
                assert torch.allclose(x0[b, f], expected, atol=1e-4, rtol=1e-5)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(torch.tensor([1.0, 700.0]))
    assert torch.allclose(c_skip, torch.tensor([0.5, 1 / (700.0**2 + 1)]))
    assert torch.allclose(c_out, torch.tensor([-1 / math.sqrt(2), -700 / math.sqrt(700.0**2 + 1)]))
    assert torch.allclose(c_in, torch.tensor([1 / math.sqrt(2), 1 / math.sqrt(700.0**2 + 1)]))
    assert torch.allclose(c_noise, torch.tensor([0.0, 0.25 * math.log(700.0)]))


def test_denoiser_equal_sigmas_match_reference_pipeline_step(models):
    ours, ref = models
    sample, context, ids = unet_inputs(frames=3)
    x, concat = sample[:, :, :4], sample[:, 0, 4:]
    cond = SVDCond(context, concat, ids)
    s = 4.0
    with torch.no_grad():
        x0_scalar = svd_denoise(ours, x, torch.tensor([s, s]), cond)
        x0_frames = svd_denoise(ours, x, torch.full((2, 3), s), cond)
        inp = torch.cat([x / math.sqrt(s * s + 1), concat[:, None].expand(-1, 3, -1, -1, -1)], dim=2)
        out = ref(inp, torch.full((2,), 0.25 * math.log(s)), context, ids).sample
    expected = out * (-s / math.sqrt(s * s + 1)) + x / (s * s + 1)
    assert (x0_scalar - expected).abs().max() <= 1e-5
    assert torch.equal(x0_scalar, x0_frames)


def test_denoiser_rejects_bad_inputs(models):
    ours, _ = models
    sample, context, ids = unet_inputs(frames=3)
    cond = SVDCond(context, sample[:, 0, 4:], ids)
    x = sample[:, :, :4]
    with pytest.raises(ValueError, match="sigma must be > 0"):
        svd_denoise(ours, x, torch.zeros(2, 3), cond)
    with pytest.raises(ValueError, match=r"expected \[batch=2, frames=3\]"):
        svd_denoise(ours, x, torch.ones(2, 4), cond)
    with pytest.raises(ValueError, match="expected a tensor"):
        svd_denoise(ours, x[0], torch.ones(2, 3), cond)
    with pytest.raises(ValueError, match="expected 4 channels"):
        svd_denoise(ours, sample, torch.ones(2, 3), cond)


def test_gradient_checkpointing_also_covers_the_temporal_blocks():
    """diffusers' TransformerSpatioTemporalModel checkpoints only its spatial blocks; LongVid's UNet
    checkpoints the temporal ones too: the same gradients, fewer activation bytes kept."""
    from diffusers import UNetSpatioTemporalConditionModel

    from training.memory import peak_live_bytes

    def step(checkpointing):
        unet = tiny_unet()
        unet.train()
        unet.requires_grad_(False)
        trained = [p for name, p in unet.named_parameters() if "to_q" in name]
        for p in trained:
            p.requires_grad_(True)
        checkpointing(unet)
        sample, context, time_ids = unet_inputs(batch=1, frames=6, h=16, w=16, cross=unet.config.cross_attention_dim)

        def forward_backward():
            unet(sample, torch.zeros(1, 6), context, time_ids).square().mean().backward()

        peaks, _ = peak_live_bytes(forward_backward)
        return peaks["all"][0], [p.grad for p in trained]

    diffusers_peak, diffusers_grads = step(UNetSpatioTemporalConditionModel.enable_gradient_checkpointing)
    ours_peak, ours_grads = step(lambda unet: unet.enable_gradient_checkpointing())
    assert all(torch.equal(a, b) for a, b in zip(diffusers_grads, ours_grads))
    assert ours_peak < 0.8 * diffusers_peak, (ours_peak, diffusers_peak)  # measured 0.46x at 32x32 x 8 frames
