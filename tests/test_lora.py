"""LoRA files (longvid_core/weights/lora.py) on the tiny SVD: written, read back, merged or kept as layers,
beside an ExVideo extension, and refused with a clear message when they do not fit."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from longvid_core import CheckpointError, load_svd
from longvid_core.networks import exvideo
from longvid_core.networks.conditioning import SVDCond
from longvid_core.weights import exvideo_file
from longvid_core.weights import lora
from longvid_core.weights.checkpoint_io import open_tensors
from longvid_core.weights.trained_for import TrainedFor
from tests.tiny import tiny_svd, write_tiny_sgm

RANK, ALPHA = 4, 8.0
# merged (W + s*a/r*B@A in float32) and unmerged (W x + s*a/r*B(A x)) differ only in float32 rounding
MERGE_TOLERANCE = 1e-5


def _lora_model(seed: int, targets=lora.DEFAULT_TARGETS, extension_frames: int | None = None):
    """A tiny SVD with LoRA layers whose B is random (as after training), not zero."""
    model = tiny_svd(0)
    if extension_frames:
        exvideo.extend_unet(model, extension_frames)
    modules = lora.resolve_targets(model.unet, targets)
    params = lora.add_lora_layers(model.unet, modules, RANK, ALPHA)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base = write_tiny_sgm(root / "svd_tiny.safetensors")
    trained = TrainedFor(progressive=True, clip_frames=6, window=4, chunk=2, steps=4)
    path = lora.save_lora(_lora_model(1).unet, root / "lora.safetensors", lora.DEFAULT_TARGETS,
                          metadata=trained.to_metadata())
    extended = tiny_svd(0)
    exvideo.extend_unet(extended, 8)
    extension = exvideo_file.save_extension(extended, root / "extension.safetensors")
    return {"root": root, "base": base, "lora": path, "extension": extension, "trained_for": trained}


def _denoise(model, frames: int = 4):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, frames, 4, 8, 8, generator=gen)
    cond = SVDCond(torch.randn(1, 1, 32, generator=gen), torch.randn(1, 4, 8, 8, generator=gen),
                   torch.tensor([[5.0, 127.0, 0.0]]))
    with torch.no_grad():
        return model.denoise(x, torch.full((1, frames), 2.0), cond)


def test_file_round_trips_with_names_and_metadata(files):
    written = _lora_model(1).unet
    read = lora.read_lora(files["lora"])
    assert (read.rank, read.alpha, read.targets) == (RANK, ALPHA, lora.DEFAULT_TARGETS)
    assert read.trained_for == files["trained_for"]
    params = lora.lora_parameters(written)
    keys = list(open_tensors(files["lora"]).keys())
    assert sorted(keys) == sorted(params)
    assert "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in keys
    assert "mid_block.attentions.0.temporal_transformer_blocks.0.attn1.to_out.0.lora_B.weight" in keys
    assert not any(".default." in k for k in keys)  # peft's adapter name is not in the file
    for module, (a, b) in read.weights.items():
        assert torch.equal(a, params[module + ".lora_A.weight"]) and torch.equal(b, params[module + ".lora_B.weight"])
    # 4 projections x 2 attentions x (spatial + temporal) in each of the tiny model's 4 transformers
    assert len(read.weights) == 4 * 2 * 2 * 4


def test_merged_and_unmerged_give_the_same_outputs(files):
    plain = _denoise(load_svd(files["base"]))
    merged_model = load_svd(files["base"], lora=files["lora"], lora_strength=0.7)
    unmerged_model = load_svd(files["base"], lora=files["lora"], lora_strength=0.7, merge_lora=False)
    assert lora.lora_layers(unmerged_model.unet) and not lora.lora_layers(merged_model.unet)
    merged, unmerged = _denoise(merged_model), _denoise(unmerged_model)
    assert (merged - plain).abs().max() > 1e-2  # the LoRA does change the output
    assert (merged - unmerged).abs().max() <= MERGE_TOLERANCE
    assert merged_model.trained_for == unmerged_model.trained_for == files["trained_for"]
    # the strength scales the one learned direction: strength 1 differs from 0.7
    assert (_denoise(load_svd(files["base"], lora=files["lora"])) - merged).abs().max() > 1e-3


def test_strength_zero_is_the_base_exactly(files):
    base = load_svd(files["base"])
    merged = load_svd(files["base"], lora=files["lora"], lora_strength=0.0)
    assert all(torch.equal(a, b) for a, b in zip(base.unet.state_dict().values(), merged.unet.state_dict().values()))
    unmerged = load_svd(files["base"], lora=files["lora"], lora_strength=0.0, merge_lora=False)
    assert torch.equal(_denoise(base), _denoise(unmerged))


def test_fp16_merge_keeps_fp16_weights(files):
    model = load_svd(files["base"], dtype="fp16", lora=files["lora"], lora_strength=0.5)
    assert {p.dtype for p in model.unet.parameters()} == {torch.float16}
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    base = load_svd(files["base"], dtype="fp16").unet.get_submodule(module).weight
    a, b = lora.read_lora(files["lora"]).weights[module]
    expected = (base.float() + 0.5 * (ALPHA / RANK) * (b @ a)).half()  # in float32, rounded once
    assert torch.equal(model.unet.get_submodule(module).weight, expected)


def test_lora_beside_an_extension_adapts_the_extended_model(files, tmp_path):
    # trained on top of an extension: the temporal layers it adapts are the extension's
    on_extension = lora.save_lora(_lora_model(2, extension_frames=8).unet, tmp_path / "ext_lora.safetensors",
                                  lora.DEFAULT_TARGETS)
    extended = load_svd(files["base"], extension=files["extension"])
    both = load_svd(files["base"], extension=files["extension"], lora=on_extension)
    kept = load_svd(files["base"], extension=files["extension"], lora=on_extension, merge_lora=False)
    assert both.max_frames == kept.max_frames == 8
    assert (_denoise(both, 6) - _denoise(extended, 6)).abs().max() > 1e-2
    assert (_denoise(both, 6) - _denoise(kept, 6)).abs().max() <= MERGE_TOLERANCE
    assert both.trained_for is None  # neither file records a training


def test_a_file_that_is_not_a_lora_is_refused(files, tmp_path):
    with pytest.raises(CheckpointError, match="expected a LongVid LoRA file .* looks like an ExVideo extension"):
        load_svd(files["base"], lora=files["extension"])
    with pytest.raises(CheckpointError, match="expected a complete safetensors file"):
        (tmp_path / "cut.safetensors").write_bytes(files["lora"].read_bytes()[:200])
        load_svd(files["base"], lora=tmp_path / "cut.safetensors")
    tensors = open_tensors(files["lora"])
    state = {k: tensors[k] for k in tensors.keys()}
    metadata = dict(tensors.metadata)
    one_sided = {k: v for k, v in state.items() if not k.startswith("down_blocks.0.attentions.0.transformer_blocks.0"
                                                                   ".attn1.to_q.lora_B")}
    save_file(one_sided, str(tmp_path / "unpaired.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match="needs both lora_A.weight and lora_B.weight; .*attn1.to_q"):
        lora.read_lora(tmp_path / "unpaired.safetensors")
    save_file(state, str(tmp_path / "rank.safetensors"), metadata={**metadata, lora.META_RANK: "8"})
    with pytest.raises(CheckpointError, match=r"expected A \[rank 8, in\] and B \[out, rank 8\]; found .*A \[4, 64\]"):
        lora.read_lora(tmp_path / "rank.safetensors")


def test_a_lora_for_another_model_names_what_is_missing_and_what_differs(files, tmp_path):
    tensors = open_tensors(files["lora"])
    metadata = dict(tensors.metadata)
    renamed = {k.replace("down_blocks.0.", "down_blocks.7."): tensors[k] for k in tensors.keys()}
    save_file(renamed, str(tmp_path / "missing.safetensors"), metadata=metadata)
    base = load_svd(files["base"])
    before = {k: v.clone() for k, v in base.unet.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"does not fit the model .*target layers do not exist in the model, "
                                              r"e.g. \['down_blocks.7.attentions"):
        lora.apply_lora_file(base, tmp_path / "missing.safetensors")
    assert all(torch.equal(before[k], v) for k, v in base.unet.state_dict().items())  # nothing was changed
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    wider = {k: tensors[k] for k in tensors.keys()}
    wider[key + ".lora_A.weight"] = torch.zeros(RANK, 96)
    save_file(wider, str(tmp_path / "shape.safetensors"), metadata=metadata)
    with pytest.raises(CheckpointError, match=rf"{key}: LoRA for weight \[64, 96\], model has \[64, 64\]"):
        load_svd(files["base"], lora=tmp_path / "shape.safetensors")


def test_targets_choose_layers_and_refuse_a_pattern_that_matches_nothing():
    unet = tiny_svd(0).unet
    temporal = lora.resolve_targets(unet, "temporal_transformer_blocks.*.to_q,temporal_transformer_blocks.*.to_v")
    assert len(temporal) == 2 * 2 * 4 and all(".temporal_transformer_blocks." in n for n in temporal)
    assert lora.resolve_targets(unet, "to_out.0") == [n for n in lora.linear_layers(unet) if n.endswith("to_out.0")]
    with pytest.raises(ValueError, match="LoRA target 'to_qq' matches no linear layer of the UNet"):
        lora.resolve_targets(unet, "to_q,to_qq")
    with pytest.raises(ValueError, match="expected a comma list of module-name patterns"):
        lora.parse_targets(" , ")


def test_written_metadata_is_self_describing(files):
    metadata = open_tensors(files["lora"]).metadata
    assert metadata[lora.META_KIND] == "longvid.lora" and metadata[lora.META_VERSION] == "1"
    assert (int(metadata[lora.META_RANK]), float(metadata[lora.META_ALPHA])) == (RANK, ALPHA)
    assert json.loads(metadata[lora.META_TARGETS]) == list(lora.DEFAULT_TARGETS)


def test_loader_node_lists_loras_and_merges_the_chosen_one(files, monkeypatch, tmp_path):
    from nodes import NODES, model_cache

    loras = tmp_path / "loras"
    (loras / "mine").mkdir(parents=True)
    (loras / "mine" / "lora.safetensors").write_bytes(files["lora"].read_bytes())
    monkeypatch.setenv("LONGVID_CHECKPOINTS_DIR", str(files["root"]))
    monkeypatch.setenv("LONGVID_LORAS_DIR", str(loras))
    node = NODES["LongVidLoadModel"]
    lora_input, strength = node.SPEC.input("lora"), node.SPEC.input("lora_strength")
    assert lora_input.optional and strength.optional
    assert lora_input.choices() == ["none", "mine/lora.safetensors"] and strength.default == 1.0
    model_cache.clear_cache()
    try:
        plain = node().load("svd_tiny.safetensors", "none", "fp32")[0]  # the inputs saved workflows already have
        tuned = node().load("svd_tiny.safetensors", "none", "fp32", "mine/lora.safetensors", 0.7)[0]
        assert tuned is not plain and "LoRA lora.safetensors at 0.7" in tuned.describe()
        expected = load_svd(files["base"], lora=files["lora"], lora_strength=0.7)
        assert torch.equal(_denoise(tuned.svd), _denoise(expected))
        assert node().load("svd_tiny.safetensors", "none", "fp32", "mine/lora.safetensors", 0.7)[0] is tuned
        inputs = dict(ckpt_name="svd_tiny.safetensors", extension="none", dtype="fp32",
                      lora="mine/lora.safetensors")
        assert node.fingerprint_inputs(**inputs, lora_strength=0.5) != node.fingerprint_inputs(**inputs,
                                                                                               lora_strength=0.7)
    finally:
        model_cache.clear_cache()


def test_a_lora_made_on_another_base_loads_with_a_warning(files, tmp_path):
    made_on = load_svd(files["base"])  # load_svd gives the model its base identity, which the file records
    params = lora.add_lora_layers(made_on.unet, lora.resolve_targets(made_on.unet, "to_q"), RANK, ALPHA)
    with torch.no_grad():
        for p in params.values():
            p.fill_(0.01)
    path = lora.save_lora(made_on, tmp_path / "on_base.safetensors", ["to_q"],
                          metadata={lora.META_EXTENSION: "some_extension.safetensors"})
    assert lora.read_lora(path).metadata[lora.META_BASE_SOURCE] == "svd_tiny.safetensors"
    assert load_svd(files["base"], extension=files["extension"], lora=path).warnings == []
    other = write_tiny_sgm(tmp_path / "other_base.safetensors", seed=1)
    [warning] = load_svd(other, extension=files["extension"], lora=path).warnings
    assert warning.startswith("LoRA on_base.safetensors was made for base ") and "(svd_tiny.safetensors)" in warning
    [warning] = load_svd(files["base"], lora=path).warnings
    assert "trained beside the extension some_extension.safetensors, but no extension is loaded" in warning
