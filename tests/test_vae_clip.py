"""Temporal VAE and CLIP image encoder: SGM key maps, architecture from shapes, encode/decode.

Tiny random models (a few dozen channels) so everything runs in seconds on a CPU. The real file's
complete name/shape list (tests/data/svd_xt_keys_shapes.txt: the tensor names and shapes of the
released svd_xt.safetensors) is checked against meta-device real-size models, which proves the
maps for ``svd_xt.safetensors`` without its 9.6 GB.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from longvid_core.networks.conditioning import SVDCond, encode_image
from longvid_core.networks.decoding import decode, frame_windows
from longvid_core.networks.image_encoder import build_image_encoder, clip_preprocess, embed_image
from longvid_core.networks.vae import VAE_SCALE, build_vae, encode_latent_dist_mode
from longvid_core.weights.keymaps import sgm_clip, sgm_vae
from tests.tiny import KEYS_SHAPES, TINY_CLIP, TINY_VAE, randomize_, real_file_shapes, shapes_of, tiny_clip, tiny_vae

def random_image(batch=2, h=16, w=24, seed=3):
    return torch.rand(batch, h, w, 3, generator=torch.Generator().manual_seed(seed))


class CountingMapping(Mapping):
    """A lazy-mapping stand-in that records how often each tensor is read."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.reads: dict[str, int] = {}

    def __getitem__(self, key):
        self.reads[key] = self.reads.get(key, 0) + 1
        return self.tensors[key]

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self):
        return len(self.tensors)


# ------------------------------------------------------------------------------------ VAE map


def test_vae_sgm_round_trip_is_bit_exact():
    sgm = sgm_vae.from_ours(tiny_vae().state_dict())
    assert not any(k.startswith("quant_conv") for k in sgm)
    assert "decoder.mid.block_1.mix_factor" in sgm and "decoder.conv_out.time_mix_conv.weight" in sgm
    counting = CountingMapping(sgm)
    ours = sgm_vae.to_ours(counting)
    assert counting.reads == {k: 1 for k in sgm}  # each tensor read once
    back = sgm_vae.from_ours(ours)
    assert set(back) == set(sgm)
    for key, value in sgm.items():
        assert back[key].shape == value.shape and back[key].dtype == value.dtype
        assert torch.equal(back[key], value), key


def test_vae_sgm_state_loads_strict_and_gives_identical_outputs():
    original = tiny_vae(seed=1)
    sgm = sgm_vae.from_ours(original.state_dict())
    assert sgm["encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)  # LDM 1x1-conv attention
    config = sgm_vae.config_from_shapes(shapes_of(sgm))
    assert config == TINY_VAE
    rebuilt = build_vae(config)
    result = rebuilt.load_state_dict(sgm_vae.to_ours(sgm), strict=True)
    assert not result.missing_keys and not result.unexpected_keys

    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.equal(encode_latent_dist_mode(original, images), encode_latent_dist_mode(rebuilt, images))
    latents = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(decode(original, latents), decode(rebuilt, latents))


def test_vae_to_ours_makes_no_copies():
    sgm = sgm_vae.from_ours(tiny_vae().state_dict())
    ours = sgm_vae.to_ours(sgm)
    attn = ours["decoder.mid_block.attentions.0.to_q.weight"]
    assert attn.shape == (64, 64)
    assert attn.data_ptr() == sgm["decoder.mid.attn_1.q.weight"].data_ptr()
    assert ours["decoder.time_conv_out.weight"] is sgm["decoder.conv_out.time_mix_conv.weight"]


def test_vae_to_ours_adds_identity_quant_conv_in_the_loaded_dtype():
    sgm = {k: v.half() for k, v in sgm_vae.from_ours(tiny_vae().state_dict()).items()}
    ours = sgm_vae.to_ours(sgm)
    assert ours["quant_conv.weight"].dtype == torch.float16
    assert torch.equal(ours["quant_conv.weight"].reshape(8, 8), torch.eye(8, dtype=torch.float16))
    assert not ours["quant_conv.bias"].any()


def test_real_file_vae_keys_map_completely_onto_a_real_size_model():
    shapes = real_file_shapes(sgm_vae.PREFIX)
    assert len(shapes) == 372
    config = sgm_vae.config_from_shapes(shapes)
    assert config["block_out_channels"] == (128, 256, 512, 512)
    assert config["layers_per_block"] == 2 and config["latent_channels"] == 4
    model = build_vae(config, device="meta")
    expected = shapes_of(model.state_dict())
    ours = sgm_vae.to_ours({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    assert shapes_of(ours) == expected
    assert sum(v.numel() for v in ours.values()) - 8 * 8 - 8 == 97_742_775  # the file's count + quant_conv
    assert shapes_of(sgm_vae.from_ours(ours)) == shapes


def test_vae_without_temporal_decoder_is_refused():
    sgm = sgm_vae.from_ours(tiny_vae().state_dict())
    image_vae = {k: v for k, v in sgm.items() if "time_stack" not in k and "mix_factor" not in k and "time_mix" not in k}
    with pytest.raises(ValueError, match="no temporal decoder.*decoder.mid.block_1.mix_factor"):
        sgm_vae.config_from_shapes(shapes_of(image_vae))
    with pytest.raises(ValueError, match="no temporal decoder"):
        sgm_vae.to_ours(image_vae)


def test_vae_unknown_keys_are_named():
    sgm = sgm_vae.from_ours(tiny_vae().state_dict())
    with pytest.raises(ValueError, match="decoder.mid.attn_1.extra.weight"):
        sgm_vae.to_ours({**sgm, "decoder.mid.attn_1.extra.weight": torch.zeros(1)})
    ours = tiny_vae().state_dict()
    with pytest.raises(ValueError, match="decoder.bogus"):
        sgm_vae.from_ours({**ours, "decoder.bogus": torch.zeros(1)})


def test_vae_non_identity_quant_conv_cannot_be_saved_as_sgm():
    state = randomize_(build_vae(TINY_VAE), 5).state_dict()
    with pytest.raises(ValueError, match="identity quant_conv"):
        sgm_vae.from_ours(state)


def test_build_vae_accepts_a_diffusers_config_json_and_honours_dtype_and_device():
    config = {"_class_name": "AutoencoderKLTemporalDecoder", "_diffusers_version": "0.24.0.dev0",
              **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY_VAE.items()},
              "force_upcast": True, "sample_size": 768, "scaling_factor": 0.18215}
    vae = build_vae(config, dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in vae.parameters())
    assert tuple(vae.config.block_out_channels) == (32, 64) and not vae.training
    meta = build_vae(config, device="meta")
    assert all(p.is_meta for p in meta.parameters())


# ----------------------------------------------------------------------------------- CLIP map


def test_clip_sgm_round_trip_is_bit_exact():
    sgm = sgm_clip.from_ours(tiny_clip().state_dict())
    assert sgm["transformer.resblocks.0.attn.in_proj_weight"].shape == (192, 64)
    assert sgm["proj"].shape == (64, 32)
    counting = CountingMapping(sgm)
    back = sgm_clip.from_ours(sgm_clip.to_ours(counting))
    assert counting.reads == {k: 1 for k in sgm}
    assert set(back) == set(sgm)
    for key, value in sgm.items():
        assert torch.equal(back[key], value), key


def test_clip_sgm_state_loads_strict_and_gives_identical_embeddings():
    original = tiny_clip(seed=2)
    sgm = sgm_clip.from_ours(original.state_dict())
    config = sgm_clip.config_from_shapes(shapes_of(sgm))
    assert config == TINY_CLIP
    rebuilt = build_image_encoder(config)
    result = rebuilt.load_state_dict(sgm_clip.to_ours(sgm), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    pixel_values = clip_preprocess(random_image())
    expected = embed_image(original, pixel_values)
    assert expected.shape == (2, 1, 32)
    assert torch.equal(embed_image(rebuilt, pixel_values), expected)


def test_clip_projection_is_used_as_x_at_proj():
    sgm = sgm_clip.from_ours(tiny_clip(seed=4).state_dict())
    encoder = build_image_encoder(TINY_CLIP)
    encoder.load_state_dict(sgm_clip.to_ours(sgm), strict=True)
    pooled = torch.randn(3, 64)
    assert torch.allclose(encoder.visual_projection(pooled), pooled @ sgm["proj"], atol=1e-6)


def test_real_file_clip_keys_map_completely_and_leftovers_are_ignored():
    shapes = real_file_shapes(sgm_clip.PREFIX)
    assert len(shapes) == 392
    config = sgm_clip.config_from_shapes(shapes)
    assert config == dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                          num_channels=3, image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu",
                          layer_norm_eps=1e-5)
    model = build_image_encoder(config, device="meta")
    ours = sgm_clip.to_ours({k: torch.empty(s, device="meta") for k, s in shapes.items()})
    assert shapes_of(ours) == shapes_of(model.state_dict())
    assert sum(v.numel() for v in ours.values()) == 632_076_800
    assert shapes_of(sgm_clip.from_ours(ours)) == shapes

    all_keys = [line.split("\t")[0] for line in KEYS_SHAPES.read_text().splitlines()]
    leftovers = [k for k in all_keys if not k.startswith(("model.diffusion_model.", sgm_vae.PREFIX, sgm_clip.PREFIX))]
    assert len(leftovers) == 6 + 248
    assert all(sgm_clip.is_ignored_sgm_key(k) for k in leftovers)
    assert not any(sgm_clip.is_ignored_sgm_key(k) for k in all_keys if k not in leftovers)


def test_clip_unknown_keys_are_named():
    sgm = sgm_clip.from_ours(tiny_clip().state_dict())
    with pytest.raises(ValueError, match="attnpool.query"):
        sgm_clip.to_ours({**sgm, "attnpool.query": torch.zeros(1)})
    with pytest.raises(ValueError, match="vision_model.bogus"):
        sgm_clip.from_ours({**tiny_clip().state_dict(), "vision_model.bogus": torch.zeros(1)})


def test_clip_head_count_rule():
    base = shapes_of(sgm_clip.from_ours(tiny_clip().state_dict()))
    assert sgm_clip.config_from_shapes(base)["num_attention_heads"] == 1  # 64 // OpenCLIP's default 64
    assert sgm_clip.config_from_shapes(base, num_attention_heads=4)["num_attention_heads"] == 4
    odd = {**base, "conv1.weight": (72, 3, 32, 32)}
    with pytest.raises(ValueError, match="pass num_attention_heads"):
        sgm_clip.config_from_shapes(odd)


# ---------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize("h, w", [(576, 1024), (64, 48), (224, 224), (40, 360)])
def test_clip_preprocess_matches_diffusers_svd_pipeline(h, w):
    image = random_image(batch=2, h=h, w=w, seed=h + w)
    # diffusers' StableVideoDiffusionPipeline._encode_image: to -1..1, antialiased resize, back to
    # 0..1, then the CLIP image processor's normalisation.
    x = image.permute(0, 3, 1, 2) * 2.0 - 1.0
    x = (_resize_with_antialiasing(x, (224, 224)) + 1.0) / 2.0
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    expected = (x - mean) / std
    got = clip_preprocess(image)
    assert got.shape == (2, 3, 224, 224) and got.dtype == torch.float32
    # Same filters in the same order; only float32 rounding differs (about 2e-7 before
    # normalisation, times 1/std < 4 after). Pixel noise images are the worst case for resizing.
    assert (got - expected).abs().max() < 2e-6


# ------------------------------------------------------------------------- encode_image/decode


def test_encode_image_shapes_and_time_ids():
    vae, clip = tiny_vae(), tiny_clip()
    cond = encode_image(clip, vae, random_image(), fps=7, motion_bucket_id=100, noise_aug_strength=0.05, seed=1)
    assert isinstance(cond, SVDCond)
    assert cond.image_embeds.shape == (2, 1, 32)
    assert cond.concat_latent.shape == (2, 4, 8, 12)  # tiny VAE downsamples by 2
    assert torch.equal(cond.added_time_ids, torch.tensor([[6.0, 100.0, 0.05]] * 2))
    assert cond.image_embeds.dtype == cond.concat_latent.dtype == torch.float32


def test_encode_image_is_deterministic_per_seed():
    vae, clip = tiny_vae(), tiny_clip()
    image = random_image()
    a = encode_image(clip, vae, image, noise_aug_strength=0.1, seed=5)
    b = encode_image(clip, vae, image, noise_aug_strength=0.1, seed=5)
    c = encode_image(clip, vae, image, noise_aug_strength=0.1, seed=6)
    assert torch.equal(a.concat_latent, b.concat_latent) and torch.equal(a.image_embeds, b.image_embeds)
    assert not torch.equal(a.concat_latent, c.concat_latent)
    assert torch.equal(a.image_embeds, c.image_embeds)  # CLIP sees the un-augmented image


def test_encode_image_noise_is_added_in_minus_one_to_one_space_before_the_vae():
    vae, clip = tiny_vae(), tiny_clip()
    image = random_image()
    pixels = image.permute(0, 3, 1, 2) * 2 - 1
    noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(9))
    cond = encode_image(clip, vae, image, noise_aug_strength=0.3, seed=9)
    assert torch.equal(cond.concat_latent, encode_latent_dist_mode(vae, pixels + 0.3 * noise))


def test_encode_image_without_augmentation_is_the_unscaled_vae_mode():
    vae, clip = tiny_vae(), tiny_clip()
    image = random_image()
    cond = encode_image(clip, vae, image, noise_aug_strength=0.0, seed=123)
    mode = encode_latent_dist_mode(vae, image.permute(0, 3, 1, 2) * 2 - 1)
    assert torch.equal(cond.concat_latent, mode)
    assert torch.equal(cond.concat_latent, vae.encode(image.permute(0, 3, 1, 2) * 2 - 1).latent_dist.mean)
    negative = cond.negative()
    assert not negative.image_embeds.any() and not negative.concat_latent.any()
    assert torch.equal(negative.added_time_ids, cond.added_time_ids)


@pytest.mark.parametrize(
    "image, match",
    [
        (torch.rand(1, 3, 16, 16), r"\[batch, height, width, 3\]"),
        (torch.rand(1, 12, 16, 3), "multiples of 8"),
        (torch.rand(1, 16, 16, 3) * 2 - 1, "0..1"),
        (torch.randint(0, 255, (1, 16, 16, 3)), "float"),
    ],
)
def test_encode_image_rejects_bad_images(image, match):
    with pytest.raises(ValueError, match=match):
        encode_image(tiny_clip(), tiny_vae(), image)


def test_decode_gives_frames_in_unit_range_and_matches_the_temporal_decoder():
    vae = tiny_vae(seed=7)
    latents = torch.randn(2, 5, 4, 6, 8, generator=torch.Generator().manual_seed(2))
    frames = decode(vae, latents, window=5)
    assert frames.shape == (2, 5, 12, 16, 3) and frames.dtype == torch.float32
    assert frames.min() >= 0 and frames.max() <= 1
    with torch.no_grad():
        pixels = vae.decode((latents / VAE_SCALE).flatten(0, 1), num_frames=5).sample
    expected = ((pixels + 1) / 2).clamp(0, 1).unflatten(0, (2, 5)).permute(0, 1, 3, 4, 2)
    assert torch.equal(frames, expected)


def test_decode_in_chunks_decodes_each_chunk_as_its_own_clip():
    vae = tiny_vae(seed=8)
    latents = torch.randn(1, 5, 4, 6, 6, generator=torch.Generator().manual_seed(3))
    assert frame_windows(5, 2, overlap=0) == [(0, 2), (2, 4), (4, 5)]
    done = []
    frames = decode(vae, latents, window=2, overlap=0, callback=lambda p: done.append((p.stage, p.done, p.total)))
    assert done == [("decoding", 2, 5), ("decoding", 4, 5), ("decoding", 5, 5)]
    pieces = [decode(vae, latents[:, s:e], window=e - s) for s, e in frame_windows(5, 2, overlap=0)]
    assert torch.equal(frames, torch.cat(pieces, dim=1))
    # the temporal layers mix frames, so a different chunking gives different frames
    assert not torch.allclose(frames, decode(vae, latents, window=5))


def test_decode_rejects_wrong_latent_shapes():
    vae = tiny_vae()
    with pytest.raises(ValueError, match="frames"):
        decode(vae, torch.zeros(5, 4, 6, 6))
    with pytest.raises(ValueError, match="4 channels"):
        decode(vae, torch.zeros(1, 5, 8, 6, 6))


def test_meta_build_then_assign_loads_in_the_file_dtype_and_runs_in_bf16():
    """The loader's path: architecture from shapes, meta model, weights assigned in the target dtype."""
    sgm_v = {k: v.to(torch.bfloat16) for k, v in sgm_vae.from_ours(tiny_vae().state_dict()).items()}
    sgm_c = {k: v.to(torch.bfloat16) for k, v in sgm_clip.from_ours(tiny_clip().state_dict()).items()}
    vae = build_vae(sgm_vae.config_from_shapes(shapes_of(sgm_v)), device="meta")
    vae.load_state_dict(sgm_vae.to_ours(sgm_v), strict=True, assign=True)
    clip = build_image_encoder(sgm_clip.config_from_shapes(shapes_of(sgm_c)), device="meta")
    clip.load_state_dict(sgm_clip.to_ours(sgm_c), strict=True, assign=True)
    clip.vision_model.embeddings.register_buffer(  # non-persistent, so not in any file (the loader rebuilds it)
        "position_ids", torch.arange(50).expand(1, -1), persistent=False)
    assert {p.dtype for p in vae.parameters()} == {p.dtype for p in clip.parameters()} == {torch.bfloat16}
    cond = encode_image(clip, vae, random_image(), noise_aug_strength=0.02, seed=0)
    assert cond.concat_latent.dtype == torch.float32 and torch.isfinite(cond.concat_latent).all()
    frames = decode(vae, torch.randn(1, 3, 4, 6, 6), window=2)
    assert frames.dtype == torch.float32 and frames.shape == (1, 3, 12, 12, 3)


def test_config_from_json_reads_diffusers_component_configs(tmp_path):
    from longvid_core.networks import image_encoder, vae

    vae_json = tmp_path / "vae.json"
    vae_json.write_text('{"_class_name": "AutoencoderKLTemporalDecoder", "block_out_channels": [32, 64], '
                        '"down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"], "layers_per_block": 2, '
                        '"latent_channels": 4, "in_channels": 3, "out_channels": 3, "force_upcast": true}')
    assert tuple(build_vae(vae.config_from_json(vae_json)).config.block_out_channels) == (32, 64)
    image_vae_json = tmp_path / "image_vae.json"
    image_vae_json.write_text('{"_class_name": "AutoencoderKL"}')
    with pytest.raises(ValueError, match="AutoencoderKLTemporalDecoder.*found AutoencoderKL"):
        vae.config_from_json(image_vae_json)

    clip_json = tmp_path / "clip.json"
    clip_json.write_text('{"architectures": ["CLIPVisionModelWithProjection"], "model_type": "clip_vision_model", '
                         '"dropout": 0.0, "hidden_act": "gelu", "hidden_size": 64, "image_size": 224, '
                         '"intermediate_size": 128, "layer_norm_eps": 1e-05, "num_attention_heads": 1, '
                         '"num_channels": 3, "num_hidden_layers": 2, "patch_size": 32, "projection_dim": 32, '
                         '"torch_dtype": "float16", "transformers_version": "4.34.0.dev0"}')
    encoder = build_image_encoder(image_encoder.config_from_json(clip_json))
    assert encoder.config.projection_dim == 32 and encoder.config.hidden_act == "gelu"
    assert next(encoder.parameters()).dtype == torch.float32  # dtype comes from the caller, not the json
