"""ExVideo extension: fresh extension == SVD, long clips, batching, both file layouts, errors."""

import copy
import functools
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from longvid_core.networks import exvideo
from longvid_core.networks.unet import LongVidUNet
from longvid_core.weights import exvideo_file
from longvid_core.weights.checkpoint_io import CheckpointError
from longvid_core.weights.keymaps import diffsynth, sgm_unet
from tests.tiny import real_file_shapes, tiny_unet, unet_inputs, write_tiny_sgm

# The released ExVideo-SVD-128f-v1 file (notes/exvideo_format.md): DiffSynth block, SGM prefix, C.
RELEASE_BLOCKS = (
    (7, "input_blocks.1.1.", 320), (17, "input_blocks.2.1.", 320), (29, "input_blocks.4.1.", 640),
    (39, "input_blocks.5.1.", 640), (51, "input_blocks.7.1.", 1280), (61, "input_blocks.8.1.", 1280),
    (83, "middle_block.1.", 1280), (113, "output_blocks.3.1.", 1280), (123, "output_blocks.4.1.", 1280),
    (133, "output_blocks.5.1.", 1280), (144, "output_blocks.6.1.", 640), (154, "output_blocks.7.1.", 640),
    (164, "output_blocks.8.1.", 640), (175, "output_blocks.9.1.", 320), (185, "output_blocks.10.1.", 320),
    (195, "output_blocks.11.1.", 320),
)
# suffix, shape as a function of C (context 1024), SGM name under the block prefix (None: new in ExVideo)
RELEASE_SUFFIXES = (
    ("positional_embedding.embeddings", lambda c: (128, c), None),
    ("positional_conv.weight", lambda c: (c, c, 3, 3, 3), None),
    ("positional_conv.bias", lambda c: (c,), None),
    ("positional_embedding_proj.0.weight", lambda c: (4 * c, c), "time_pos_embed.0.weight"),
    ("positional_embedding_proj.0.bias", lambda c: (4 * c,), "time_pos_embed.0.bias"),
    ("positional_embedding_proj.2.weight", lambda c: (c, 4 * c), "time_pos_embed.2.weight"),
    ("positional_embedding_proj.2.bias", lambda c: (c,), "time_pos_embed.2.bias"),
    ("norm_in.weight", lambda c: (c,), "time_stack.0.norm_in.weight"),
    ("norm_in.bias", lambda c: (c,), "time_stack.0.norm_in.bias"),
    ("act_fn_in.proj.weight", lambda c: (8 * c, c), "time_stack.0.ff_in.net.0.proj.weight"),
    ("act_fn_in.proj.bias", lambda c: (8 * c,), "time_stack.0.ff_in.net.0.proj.bias"),
    ("ff_in.weight", lambda c: (c, 4 * c), "time_stack.0.ff_in.net.2.weight"),
    ("ff_in.bias", lambda c: (c,), "time_stack.0.ff_in.net.2.bias"),
    ("norm1.weight", lambda c: (c,), "time_stack.0.norm1.weight"),
    ("norm1.bias", lambda c: (c,), "time_stack.0.norm1.bias"),
    ("norm2.weight", lambda c: (c,), "time_stack.0.norm2.weight"),
    ("norm2.bias", lambda c: (c,), "time_stack.0.norm2.bias"),
    ("attn1.to_q.weight", lambda c: (c, c), "time_stack.0.attn1.to_q.weight"),
    ("attn1.to_k.weight", lambda c: (c, c), "time_stack.0.attn1.to_k.weight"),
    ("attn1.to_v.weight", lambda c: (c, c), "time_stack.0.attn1.to_v.weight"),
    ("attn1.to_out.weight", lambda c: (c, c), "time_stack.0.attn1.to_out.0.weight"),
    ("attn1.to_out.bias", lambda c: (c,), "time_stack.0.attn1.to_out.0.bias"),
    ("attn2.to_q.weight", lambda c: (c, c), "time_stack.0.attn2.to_q.weight"),
    ("attn2.to_k.weight", lambda c: (c, 1024), "time_stack.0.attn2.to_k.weight"),
    ("attn2.to_v.weight", lambda c: (c, 1024), "time_stack.0.attn2.to_v.weight"),
    ("attn2.to_out.weight", lambda c: (c, c), "time_stack.0.attn2.to_out.0.weight"),
    ("attn2.to_out.bias", lambda c: (c,), "time_stack.0.attn2.to_out.0.bias"),
    ("norm_out.weight", lambda c: (c,), "time_stack.0.norm3.weight"),
    ("norm_out.bias", lambda c: (c,), "time_stack.0.norm3.bias"),
    ("act_fn_out.proj.weight", lambda c: (8 * c, c), "time_stack.0.ff.net.0.proj.weight"),
    ("act_fn_out.proj.bias", lambda c: (8 * c,), "time_stack.0.ff.net.0.proj.bias"),
    ("ff_out.weight", lambda c: (c, 4 * c), "time_stack.0.ff.net.2.weight"),
    ("ff_out.bias", lambda c: (c,), "time_stack.0.ff.net.2.bias"),
)


def real_svd_xt_config():
    return sgm_unet.config_from_shapes(real_file_shapes(sgm_unet.PREFIX))


def perturb_extension_(unet, seed=3, scale=0.05):
    """Move every extension tensor off its initial value (identity conv, sinusoid table), so that
    round trips and batching are tested on a conv that really mixes frames and pixels."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in exvideo.extension_parameters(unet).values():
            param.add_(scale * torch.randn(param.shape, generator=gen))
    return unet


def run(unet, frames, batch=1, seed=1, h=4, w=4, t=(0.3, -0.5)):
    sample, context, ids = unet_inputs(batch=batch, frames=frames, h=h, w=w, seed=seed)
    with torch.no_grad():
        return unet(sample, torch.tensor(t[:batch]), context, ids)


@pytest.fixture(scope="module")
def base():
    return tiny_unet()


@pytest.fixture(scope="module")
def fresh(base):
    return exvideo.extend_unet(copy.deepcopy(base), 40)


@pytest.fixture(scope="module")
def trained(base):
    """An extended tiny UNet whose extension tensors all differ from their initial values."""
    return perturb_extension_(exvideo.extend_unet(copy.deepcopy(base), 12))


# ---------------------------------------------------------------------------------------------
# The extended block


def test_pingpong_position_ids():
    ids = exvideo.pingpong_position_ids(128).tolist()
    assert ids[:25] == list(range(25))
    assert ids[25:45] == list(range(23, 3, -1))
    assert ids[45:65] == list(range(5, 25))
    assert ids[65:85] == list(range(23, 3, -1))
    assert ids[125:] == [5, 6, 7]


def test_fresh_extension_is_sinusoid_table_and_identity_conv(fresh):
    modules = exvideo.temporal_transformers(fresh)
    assert len(modules) == 4 and exvideo.max_frames(fresh) == 40
    for module in modules.values():
        assert isinstance(module, exvideo.ExVideoTransformerSpatioTemporal)
        assert torch.equal(module.positional_table, module.time_proj(exvideo.pingpong_position_ids(40)))
        weight = module.positional_conv.weight
        assert torch.equal(weight[:, :, 1, 1, 1], torch.eye(weight.shape[0]))
        assert weight.abs().sum() == weight.shape[0] and not module.positional_conv.bias.any()


@pytest.mark.parametrize("frames", [2, 14, 25])
def test_fresh_extension_reproduces_base_up_to_25_frames(base, fresh, frames):
    assert (run(fresh, frames, batch=2) - run(base, frames, batch=2)).abs().max() <= 1e-5


class PingPongTimeProj(torch.nn.Module):
    """Stands in for a base block's ``time_proj``: the same sinusoid of ping-pong ids instead of
    the frame index."""

    def __init__(self, time_proj):
        super().__init__()
        self.time_proj = time_proj

    def forward(self, frame_index):
        return self.time_proj(exvideo.pingpong_position_ids(int(frame_index.max()) + 1)[frame_index])


def test_longer_clip_differs_from_base_only_by_position_ids(base, fresh):
    patched = copy.deepcopy(base)
    for module in exvideo.temporal_transformers(patched).values():
        module.time_proj = PingPongTimeProj(module.time_proj)
    extended = run(fresh, 30)
    assert (extended - run(patched, 30)).abs().max() <= 1e-5
    assert (extended - run(base, 30)).abs().max() > 1e-3  # frames 25..29 really moved to ids 23..19


def test_batched_videos_equal_separate_calls(base, trained):
    # cond and uncond in one batch: different samples, contexts (uncond = zeros) and noise levels
    sample, context, ids = unet_inputs(batch=2, frames=6, h=4, w=4, seed=5)
    context = torch.cat([context[:1], torch.zeros_like(context[1:])])
    t = torch.tensor([[0.1] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    with torch.no_grad():
        batched = trained(sample, t, context, ids)
        separate = torch.cat([trained(sample[i:i + 1], t[i:i + 1], context[i:i + 1], ids[i:i + 1]) for i in range(2)])
        plain = base(sample, t, context, ids)
    assert (batched - separate).abs().max() <= 1e-5
    assert (batched - plain).abs().max() > 1e-3  # the perturbed conv and table are in use


def test_clip_longer_than_table_is_refused(trained, base):
    assert exvideo.max_frames(trained) == 12 and exvideo.max_frames(base) is None
    with pytest.raises(ValueError, match="holds 12 frames; found a clip of 13 frames"):
        run(trained, 13)
    with pytest.raises(ValueError, match="at least 2 frames and 2x2 latent pixels"):
        run(trained, 1)


def test_extension_parameters_are_what_exvideo_trains(trained):
    names = set(exvideo.extension_parameters(trained))
    prefixes = tuple(f"{name}." for name in exvideo.temporal_transformers(trained))
    per_block = {n[len(next(p for p in prefixes if n.startswith(p))):] for n in names}
    assert len(names) == 4 * 33 and len(per_block) == 33
    assert {n for n in per_block if not n.startswith("temporal_transformer_blocks.0.")} == {
        "positional_table", "positional_conv.weight", "positional_conv.bias",
        "time_pos_embed.linear_1.weight", "time_pos_embed.linear_1.bias",
        "time_pos_embed.linear_2.weight", "time_pos_embed.linear_2.bias",
    }


def test_gradient_checkpointing_gives_the_same_gradients(trained):
    module = copy.deepcopy(exvideo.temporal_transformers(trained)["mid_block.attentions.0"]).train()
    gen = torch.Generator().manual_seed(7)
    hidden = torch.randn(2 * 4, 128, 2, 2, generator=gen)  # 2 videos x 4 frames, 2x2 pixels
    context = torch.randn(2 * 4, 1, 32, generator=gen)
    indicator = torch.zeros(2, 4)
    grads = []
    for checkpointing in (False, True):
        module.gradient_checkpointing = checkpointing
        module._gradient_checkpointing_func = functools.partial(torch.utils.checkpoint.checkpoint, use_reentrant=False)
        module.zero_grad()
        module(hidden, context, indicator, return_dict=False)[0].square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if n.startswith("positional_")})
    assert all(g.abs().max() > 0 for g in grads[0].values())
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_extending_twice_is_refused(fresh):
    with pytest.raises(ValueError, match="already ExVideo-extended \\(to 40 frames\\)"):
        exvideo.extend_unet(fresh, 64)


# ---------------------------------------------------------------------------------------------
# The DiffSynth layout


def test_diffsynth_numbering_matches_the_release():
    blocks = diffsynth.temporal_blocks(real_svd_xt_config())
    assert [(b.index, b.sgm_prefix) for b in blocks] == [(n, p) for n, p, _ in RELEASE_BLOCKS]
    # the suffix table agrees with the release's SGM names, through the one SGM<->ours map
    config = real_svd_xt_config()
    for index, sgm_prefix, _ in RELEASE_BLOCKS:
        for suffix, _, sgm_name in RELEASE_SUFFIXES:
            if sgm_name is None:
                continue
            ours_via_diffsynth = diffsynth.to_ours({f"blocks.{index}.{suffix}": 0}, config)
            ours_via_sgm = sgm_unet.to_ours({sgm_prefix + sgm_name: 0}, config)
            assert ours_via_diffsynth == ours_via_sgm


def test_full_size_diffsynth_export_has_the_release_tensors():
    with torch.device("meta"):
        unet = LongVidUNet(**real_svd_xt_config())
    exvideo.extend_unet(unet, 128)
    exported = {k: tuple(v.shape) for k, v in exvideo_file.diffsynth_state_dict(unet).items()}
    expected = {f"blocks.{n}.{s}": shape(c) for n, _, c in RELEASE_BLOCKS for s, shape, _ in RELEASE_SUFFIXES}
    assert exported == expected
    assert len(exported) == 528
    assert sum(torch.Size(s).numel() for s in exported.values()) == 832_956_800
    with pytest.raises(ValueError, match="meta device"):
        exvideo_file.save_extension(unet, "/nonexistent/never-written.safetensors", layout="diffsynth")


def read_file(path):
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}, fh.metadata()


@pytest.mark.parametrize("layout", ["diffsynth", "longvid"])
def test_load_save_load_round_trip(base, trained, tmp_path, layout):
    first = exvideo_file.save_extension(trained, tmp_path / "first.safetensors", layout=layout)
    frozen_base = copy.deepcopy(base).requires_grad_(False)  # as load_svd returns it
    loaded = exvideo_file.apply_extension_file(frozen_base, first)
    assert exvideo.max_frames(loaded) == 12
    want, got = exvideo.extension_state_dict(trained), exvideo.extension_state_dict(loaded)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert not any(p.requires_grad for p in loaded.parameters())  # new tensors follow the base's setting
    # same tensors; CPU kernels for frozen and trainable weights differ in rounding (~1e-6)
    assert (run(loaded, 6) - run(trained, 6)).abs().max() <= 1e-5

    second = exvideo_file.save_extension(loaded, tmp_path / "second.safetensors", layout=layout)
    (a, meta_a), (b, meta_b) = read_file(first), read_file(second)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert meta_a == meta_b
    if layout == "diffsynth":
        assert sorted({int(k.split(".")[1]) for k in a}) == [7, 24, 49, 59]  # the tiny config's numbering
        assert a["blocks.7.positional_embedding.embeddings"].shape == (12, 64)
    else:
        assert meta_a[exvideo_file.META_KIND] == exvideo_file.FORMAT_KIND and meta_a[exvideo_file.META_VERSION] == "1"
        assert meta_a[exvideo_file.META_FRAMES] == "12"
        assert json.loads(meta_a[exvideo_file.META_MODULES]) == list(exvideo.temporal_transformers(trained))
        assert meta_a[exvideo_file.META_BASE_IDENTITY] == exvideo_file.base_unet_identity(base)
        assert json.loads(meta_a[exvideo_file.META_BASE_CONFIG])["block_out_channels"] == [64, 128]


def test_loading_casts_to_the_unet_dtype(base, trained, tmp_path):
    path = exvideo_file.save_extension(trained, tmp_path / "ext.safetensors", layout="diffsynth")
    half = copy.deepcopy(base).to(torch.float16)
    exvideo_file.apply_extension_file(half, path)
    assert {p.dtype for p in exvideo.extension_parameters(half).values()} == {torch.float16}
    table = exvideo.extension_parameters(half)["mid_block.attentions.0.positional_table"]
    assert torch.equal(table, exvideo.extension_parameters(trained)["mid_block.attentions.0.positional_table"].half())


# ---------------------------------------------------------------------------------------------
# Through load_svd, and errors


@pytest.fixture(scope="module")
def files(base, trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exvideo")
    return {
        "svd": write_tiny_sgm(folder / "tiny_svd.safetensors", seed=0),  # its UNet is `base`
        "diffsynth": exvideo_file.save_extension(trained, folder / "ext_diffsynth.safetensors", layout="diffsynth"),
        "longvid": exvideo_file.save_extension(trained, folder / "ext_longvid.safetensors", layout="longvid"),
    }


@pytest.mark.parametrize("layout", ["diffsynth", "longvid"])
def test_load_svd_with_extension(files, trained, layout):
    from longvid_core.weights.loading import load_svd

    model = load_svd(files["svd"], extension=files[layout], dtype="fp16")
    assert exvideo.max_frames(model) == 12
    got = exvideo.extension_state_dict(model)
    want = exvideo.extension_state_dict(trained)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k].half()) for k in want)
    assert {p.dtype for p in model.unet.parameters()} == {torch.float16}


def test_extension_alone_is_named_by_the_loader(files):
    from longvid_core.weights.loading import load_svd

    with pytest.raises(CheckpointError, match="ExVideo extension"):
        load_svd(files["diffsynth"])


@pytest.mark.parametrize("layout", ["diffsynth", "longvid"])
def test_extension_alone_tells_to_pass_it_as_extension(files, layout):
    from longvid_core.weights.loading import load_svd

    with pytest.raises(CheckpointError, match="extension="):
        load_svd(files[layout])


def test_extension_for_other_widths_is_refused(trained, files):
    wider = tiny_unet(block_out_channels=(128, 192), num_attention_heads=(2, 3))
    with pytest.raises(CheckpointError, match=r"does not fit the base UNet \(block_out_channels=\(128, 192\)\).*"
                                              r"expected \[\d+, 128\], found \[\d+, 64\]"):
        exvideo_file.apply_extension_file(wider, files["diffsynth"])
    with pytest.raises(CheckpointError, match=r"made for a different base UNet \(block_out_channels: "
                                              r"extension \[64, 128\], base \[128, 192\]"):
        exvideo_file.apply_extension_file(wider, files["longvid"])
    assert exvideo.max_frames(wider) is None  # a refused file leaves the model untouched

    deeper = tiny_unet(layers_per_block=2)
    with pytest.raises(CheckpointError, match=r"expected DiffSynth temporal blocks \[7, 17, 39, 69, 79, 89\].*"
                                              r"found blocks \[24, 49, 59\]"):
        exvideo_file.apply_extension_file(deeper, files["diffsynth"])


def test_base_that_is_not_svd_is_refused(files, tmp_path):
    from diffusers import UNet2DConditionModel
    from longvid_core.weights.loading import load_svd

    image_unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                                      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    with pytest.raises(ValueError, match="expected an SVD UNet .* found a UNet2DConditionModel with none"):
        exvideo_file.apply_extension_file(image_unet, files["diffsynth"])

    sd15 = tmp_path / "sd15.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(4)}, str(sd15))
    with pytest.raises(CheckpointError, match="expected an SVD checkpoint.*looks like an SD1.5 checkpoint"):
        load_svd(sd15, extension=files["diffsynth"])


def test_file_that_is_not_an_extension_is_refused(base, files):
    with pytest.raises(CheckpointError, match="expected an ExVideo extension .* looks like a full SVD checkpoint"):
        exvideo_file.apply_extension_file(copy.deepcopy(base), files["svd"])
