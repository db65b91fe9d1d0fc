"""The base identity: which base weights an extension (or LoRA, or checkpoint) was made for."""

import copy

import pytest
import torch

from longvid_core.networks import exvideo
from longvid_core.run.cli import main
from longvid_core.weights import base_identity
from longvid_core.weights import exvideo_file
from longvid_core.weights.loading import load_svd
from tests.tiny import write_tiny_sgm


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("identity")
    base_a = write_tiny_sgm(folder / "base_a.safetensors", seed=0)
    base_b = write_tiny_sgm(folder / "base_b.safetensors", seed=1)  # same architecture, other weights
    model = load_svd(base_a)
    exvideo.extend_unet(model, 8)
    with torch.no_grad():
        for p in exvideo.extension_parameters(model).values():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    extension = exvideo_file.save_extension(model, folder / "ext_for_a.safetensors")
    return {"a": base_a, "b": base_b, "extension": extension, "a_identity": model.base_identity}


def test_identity_is_a_few_hundred_numbers_that_survive_precision(files):
    identities = {dtype: load_svd(files["a"], dtype=dtype).base_identity for dtype in ("fp32", "fp16", "bf16")}
    values = identities["fp32"]["values"]
    assert 0 < len(values) <= base_identity.SAMPLED_TENSORS * base_identity.VALUES_PER_TENSOR
    assert identities["fp32"] == files["a_identity"]  # the same on every load
    # the same base in fp16 or bf16 (a user's fp16 copy of svd_xt) is the same base
    assert base_identity.difference(identities["fp32"], identities["fp16"]) is None
    assert base_identity.difference(identities["fp32"], identities["bf16"]) is None
    assert base_identity.short_name(identities["fp32"]) == base_identity.short_name(identities["fp16"])


def test_other_weights_of_the_same_architecture_are_another_base(files):
    a = load_svd(files["a"]).base_identity
    b = load_svd(files["b"]).base_identity
    why = base_identity.difference(a, b)
    assert why is not None and why.endswith(f"of {len(a['values'])} sampled weights differ")
    # a fine-tune that moved every weight by 10% is another base too
    model = load_svd(files["a"])
    moved = copy.deepcopy(model.unet)
    with torch.no_grad():
        for p in moved.parameters():
            p.mul_(1.1)
    assert base_identity.difference(a, base_identity.content_identity(moved)) is not None


def test_identity_is_recorded_in_extensions_and_read_back(files):
    from longvid_core.weights.checkpoint_io import open_tensors

    recorded = base_identity.read_identity(open_tensors(files["extension"]).metadata)
    assert recorded == files["a_identity"]
    assert base_identity.read_identity({}) is None
    assert base_identity.read_identity({base_identity.META_BASE_CONTENT: "not json"}) is None


def test_extension_on_its_own_base_loads_without_a_word(files):
    for dtype in ("fp32", "fp16"):
        model = load_svd(files["a"], extension=files["extension"], dtype=dtype)
        assert model.warnings == [] and exvideo.max_frames(model) == 8


def test_extension_on_another_base_loads_with_a_warning(files):
    model = load_svd(files["b"], extension=files["extension"])
    assert exvideo.max_frames(model) == 8  # it still loads: same architecture
    [warning] = model.warnings
    a, b = files["a_identity"], model.base_identity
    assert warning.startswith(f"extension ext_for_a.safetensors was made for base {base_identity.short_name(a)} "
                              f"(base_a.safetensors), but the loaded base is {base_identity.short_name(b)}: ")
    assert "sampled weights differ" in warning


def test_files_without_an_identity_are_taken_as_they_are(files, tmp_path):
    # the ExVideo release (DiffSynth layout) records no base identity: only its tensors
    from safetensors.torch import load_file, save_file

    model = load_svd(files["a"], extension=files["extension"])
    diffsynth = exvideo_file.save_extension(model, tmp_path / "ext_diffsynth.safetensors", layout="diffsynth")
    save_file(load_file(diffsynth), str(tmp_path / "release_like.safetensors"))
    assert load_svd(files["b"], extension=tmp_path / "release_like.safetensors").warnings == []
    # LongVid's own DiffSynth-layout files record it, so a mismatch is said as for the LongVid layout
    assert len(load_svd(files["b"], extension=diffsynth).warnings) == 1


def test_command_line_prints_the_warning(files, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    args = ["generate", "--svd", str(files["b"]), "--extension", str(files["extension"]), "--width", "16",
            "--height", "16", "--frames", "4", "--window", "2", "--chunk", "2", "--steps", "2", "--mode",
            "progressive", "--out", str(out), "--quiet"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert err.count("warning: extension ext_for_a.safetensors was made for base ") == 1


def test_node_loader_logs_the_warning(files, monkeypatch, caplog):
    from nodes import model_cache

    model_cache.clear_cache()
    with caplog.at_level("WARNING"):
        model = model_cache.load_model(files["b"], files["extension"], "fp32")
    assert model.svd.warnings and any("was made for base" in r.getMessage() for r in caplog.records)
    model_cache.clear_cache()
