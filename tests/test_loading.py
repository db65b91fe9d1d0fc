"""load_svd on tiny checkpoints written in the real layouts (SGM single file, diffusers folder)."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from longvid_core import CheckpointError, identify_checkpoint, load_svd, save_svd
from longvid_core.networks.conditioning import SVDCond
from tests.tiny import real_file_shapes, tiny_svd, write_tiny_diffusers, write_tiny_sgm


@pytest.fixture(scope="module")
def sgm_file(tmp_path_factory):
    return write_tiny_sgm(tmp_path_factory.mktemp("ckpt") / "svd_xt.safetensors")


@torch.no_grad()
def _outputs(model):
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 16, 16, 3, generator=gen)
    cond = model.encode_image(image, fps=7, motion_bucket_id=100, noise_aug_strength=0.02, seed=3)
    x = torch.randn(1, 3, 4, *cond.concat_latent.shape[-2:], generator=gen)
    x0 = model.denoise(x, torch.tensor([[5.0, 1.0, 0.2]]), cond)
    frames = model.decode(x0)
    return cond, x0, frames


def test_sgm_file_loads_with_the_same_outputs_as_the_model_written(sgm_file):
    written = tiny_svd(0)
    loaded = load_svd(sgm_file)
    assert loaded.unet.config.block_out_channels == (64, 128)
    for a, b in zip(_outputs(written), _outputs(loaded)):
        # weights are bit-identical (see the round trip); memory layouts of converted tensors may
        # pick other kernels, so outputs agree to float32 rounding
        pairs = [(a.image_embeds, b.image_embeds), (a.concat_latent, b.concat_latent)] if isinstance(a, SVDCond) else [(a, b)]
        for x, y in pairs:
            assert (x - y).abs().max() <= 1e-5


def test_sgm_round_trip_reproduces_every_tensor(sgm_file, tmp_path):
    out = save_svd(load_svd(sgm_file), tmp_path / "again.safetensors")
    original = {k: v for k, v in load_file(str(sgm_file)).items()
                if k.startswith(("model.diffusion_model.", "first_stage_model.", "conditioner.embedders.0.open_clip.model.visual."))}
    again = load_file(str(out))
    assert set(again) == set(original)
    for k in original:
        assert torch.equal(original[k], again[k]), k


def test_fp16_load_builds_fp16_weights_only(sgm_file):
    model = load_svd(sgm_file, dtype="fp16")
    for part in (model.unet, model.vae, model.image_encoder):
        dtypes = {p.dtype for p in part.parameters()}
        assert dtypes == {torch.float16}, dtypes
    assert not any(p.requires_grad for p in model.unet.parameters())


def test_diffusers_folder_loads_identically(tmp_path, sgm_file):
    folder = write_tiny_diffusers(tmp_path / "svd-diffusers")
    a, b = load_svd(folder), load_svd(sgm_file)
    for x, y in zip(a.unet.state_dict().values(), b.unet.state_dict().values()):
        assert torch.equal(x, y)
    assert (_outputs(a)[1] - _outputs(b)[1]).abs().max() <= 1e-5


def test_diffusers_folder_prefers_fp16_variant_for_fp16(tmp_path):
    folder = write_tiny_diffusers(tmp_path / "svd-fp16", fp16_variant=True)
    assert (folder / "unet" / "diffusion_pytorch_model.fp16.safetensors").exists()
    model = load_svd(folder, dtype=torch.float16)
    assert model.unet.dtype == torch.float16


def test_real_key_list_is_recognised_as_svd():
    assert identify_checkpoint(real_file_shapes()) == "svd"


def _write(path, tensors):
    save_file({k: torch.zeros(v) if isinstance(v, tuple) else v for k, v in tensors.items()}, str(path))
    return path


@pytest.mark.parametrize(
    "tensors, found",
    [
        ({"model.diffusion_model.input_blocks.0.0.weight": (4, 4, 3, 3),
          "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (8, 4)}, "SD1.5"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (4, 4, 3, 3),
          "conditioner.embedders.1.model.ln_final.weight": (4,)}, "SDXL"),
        ({"encoder.down.0.block.0.conv1.weight": (4, 3, 3, 3), "decoder.up.0.block.0.conv1.weight": (4, 4, 3, 3)},
         "VAE-only"),
        ({"first_stage_model.encoder.conv_in.weight": (4, 3, 3, 3)}, "VAE-only"),
    ],
)
def test_wrong_checkpoints_name_what_they_are(tmp_path, tensors, found):
    path = _write(tmp_path / "wrong.safetensors", tensors)
    with pytest.raises(CheckpointError, match=f"expected an SVD checkpoint.*looks like .*{found}"):
        load_svd(path)


def test_truncated_file_is_reported(tmp_path, sgm_file):
    data = sgm_file.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="expected a complete safetensors file"):
        load_svd(cut)


def test_svd_file_missing_a_component_is_reported(tmp_path, sgm_file):
    state = {k: v for k, v in load_file(str(sgm_file)).items() if not k.startswith("first_stage_model.")}
    path = _write(tmp_path / "novae.safetensors", state)
    with pytest.raises(CheckpointError, match=r"expected VAE tensors under first_stage_model\.\*; found none"):
        load_svd(path)


def test_wrong_shapes_are_reported(tmp_path, sgm_file):
    state = load_file(str(sgm_file))
    key = "model.diffusion_model.input_blocks.1.1.proj_in.weight"
    state[key] = torch.zeros(64, 32)
    path = _write(tmp_path / "bad.safetensors", state)
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_svd(path)


def test_folder_missing_a_component_is_reported(tmp_path):
    folder = write_tiny_diffusers(tmp_path / "partial")
    import shutil

    shutil.rmtree(folder / "image_encoder")
    with pytest.raises(CheckpointError, match=r"image_encoder/ is missing"):
        load_svd(folder)


def test_pickle_needs_explicit_permission(tmp_path, sgm_file):
    path = tmp_path / "svd.ckpt"
    torch.save({"state_dict": load_file(str(sgm_file))}, path)
    with pytest.raises(CheckpointError, match="pickle checkpoint.*allow_pickle=True"):
        load_svd(path)
    model = load_svd(path, allow_pickle=True)
    assert model.unet.config.block_out_channels == (64, 128)


def test_missing_path_and_bad_dtype(tmp_path):
    with pytest.raises(FileNotFoundError, match="no SVD checkpoint"):
        load_svd(tmp_path / "nothing.safetensors")
    with pytest.raises(ValueError, match="dtype must be one of"):
        load_svd(tmp_path, dtype="int8")
