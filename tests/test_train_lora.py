"""LoRA training (``--mode lora``) on the tiny SVD: a progressive LoRA run, its resume, a LoRA beside a
frozen ExVideo extension and beside one trained with it, and the files loading in ``load_svd`` and
the command line. Reuses test_train.py's data set and flags."""

from __future__ import annotations

import pytest
import torch

from longvid_core import load_svd
from longvid_core.networks import exvideo
from longvid_core.run.cli import main as cli_main
from longvid_core.run.video_io import read_video
from longvid_core.weights import exvideo_file
from longvid_core.weights import lora
from longvid_core.weights.checkpoint_io import open_tensors
from longvid_core.weights.trained_for import TrainedFor
from tests.test_lora import _denoise
from tests.test_train import dataset, log_records, run_args  # noqa: F401 (dataset is a fixture)
from training import checkpointing, train
from training.checkpointing import CHECKPOINTS

PROGRESSIVE = ("--frames", "0", "--progressive-window", "4", "--progressive-chunk", "2", "--progressive-steps", "4")
LORA = ("--lora-rank", "4", "--lora-alpha", "8", "--learning-rate", "1e-2")
PROGRESSIVE_RECORD = TrainedFor(progressive=True, clip_frames=6, window=4, chunk=2, steps=4)


@pytest.fixture(scope="module")
def lora_run(dataset):  # noqa: F811
    output = dataset[0] / "lora_progressive"
    args = run_args(dataset, output, "--mode", "lora,progressive", *PROGRESSIVE, *LORA, "--max-steps", "4",
                    "--save-every", "2")
    assert train.main(args) == 0
    return output


@pytest.fixture(scope="module")
def frozen_extension(dataset):  # noqa: F811
    """An ExVideo extension of the tiny base (8 frames) with non-trivial values, as if trained."""
    model = load_svd(dataset[1])
    exvideo.extend_unet(model, 8)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in exvideo.extension_parameters(model).values():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    return exvideo_file.save_extension(model, dataset[0] / "frozen_extension.safetensors")


def test_progressive_lora_run_trains_only_lora_layers_and_writes_small_files(dataset, lora_run, capsys):  # noqa: F811
    folder = lora_run / CHECKPOINTS / "step-00000004"
    state = checkpointing.read_state(folder)
    assert (state["parameter_set"], state["lora"]) == ("lora", True)
    assert sorted(state["exports"]) == ["lora.safetensors", "lora_ema.safetensors"]
    read = lora.read_lora(folder / "lora.safetensors")
    assert (read.rank, read.alpha, read.targets) == (4, 8.0, lora.DEFAULT_TARGETS)
    assert read.trained_for == PROGRESSIVE_RECORD
    assert len(read.weights) == 64  # every attention projection of the tiny UNet
    assert (folder / "lora.safetensors").stat().st_size < 0.2 * dataset[1].stat().st_size
    losses = [r["loss"] for r in log_records(lora_run) if "loss" in r]
    assert len(losses) == 4 and all(0 < value < 100 for value in losses)
    # B starts at zero: any change of the output is the training's
    base, tuned = load_svd(dataset[1]), load_svd(dataset[1], lora=folder / "lora.safetensors")
    assert (_denoise(tuned) - _denoise(base)).abs().max() > 1e-3
    assert tuned.trained_for == PROGRESSIVE_RECORD  # `auto` samples it as trained
    ema = load_svd(dataset[1], lora=folder / "lora_ema.safetensors")
    assert not torch.equal(_denoise(ema), _denoise(tuned))


def test_lora_resume_matches_the_uninterrupted_run(dataset, lora_run, capsys):  # noqa: F811
    resumed = dataset[0] / "lora_resumed"
    args = run_args(dataset, resumed, "--mode", "lora,progressive", *PROGRESSIVE, *LORA, "--max-steps", "4",
                    "--save-every", "2", "--resume", str(lora_run / CHECKPOINTS / "step-00000002"))
    assert train.main(args) == 0
    straight = [r["loss"] for r in log_records(lora_run) if "loss" in r][2:]
    assert [r["loss"] for r in log_records(resumed) if "loss" in r] == straight
    for name in ("lora.safetensors", "lora_ema.safetensors"):
        a = open_tensors(lora_run / CHECKPOINTS / "step-00000004" / name)
        b = open_tensors(resumed / CHECKPOINTS / "step-00000004" / name)
        assert sorted(a.keys()) == sorted(b.keys())
        worst = max((a[k] - b[k]).abs().max().item() for k in a.keys())
        assert worst <= 1e-6, (name, worst)
    # a LoRA checkpoint is not resumed as something else
    capsys.readouterr()
    assert train.main(run_args(dataset, dataset[0] / "wrong", "--resume",
                               str(lora_run / CHECKPOINTS / "step-00000004"))) == 2
    error = capsys.readouterr().err
    assert "cannot change on a resume: --mode: 'lora,progressive' -> 'exvideo'" in error, error


def test_lora_beside_a_frozen_extension_loads_in_load_svd_and_the_command_line(dataset, frozen_extension, tmp_path):  # noqa: F811
    output = dataset[0] / "lora_on_extension"
    args = run_args(dataset, output, "--mode", "lora,progressive", "--extension", str(frozen_extension),
                    *PROGRESSIVE, *LORA, "--max-steps", "2", "--save-every", "2", "--ema-decay", "0",
                    "--gradient-checkpointing")  # gradients reach the LoRA layers through recomputed blocks
    assert train.main(args) == 0
    lora_file = output / CHECKPOINTS / "step-00000002" / "lora.safetensors"
    assert sorted(checkpointing.read_state(lora_file.parent)["exports"]) == ["lora.safetensors"]
    read = lora.read_lora(lora_file)
    assert read.metadata[lora.META_EXTENSION] == "frozen_extension.safetensors"
    assert any(".temporal_transformer_blocks." in m for m in read.weights)  # the frozen temporal layers too
    extended = load_svd(dataset[1], extension=frozen_extension)
    both = load_svd(dataset[1], extension=frozen_extension, lora=lora_file)
    kept = load_svd(dataset[1], extension=frozen_extension, lora=lora_file, merge_lora=False)
    assert both.max_frames == 8 and both.trained_for == PROGRESSIVE_RECORD
    assert both.warnings == []  # the base it was trained on, beside an extension as trained
    assert (_denoise(both, 6) - _denoise(extended, 6)).abs().max() > 1e-3
    assert (_denoise(both, 6) - _denoise(kept, 6)).abs().max() <= 1e-5
    common = ["generate", "--svd", str(dataset[1]), "--extension", str(frozen_extension), "--width", "16",
              "--height", "16", "--frames", "6", "--window", "4", "--chunk", "2", "--steps", "4", "--quiet"]
    videos = {}
    for name, extra in (("plain", []), ("lora", ["--lora", str(lora_file)]),
                        ("zero", ["--lora", str(lora_file), "--lora-strength", "0"])):
        assert cli_main([*common, *extra, "--mode", "progressive", "--out", str(tmp_path / f"{name}.mp4")]) == 0
        videos[name] = read_video(tmp_path / f"{name}.mp4")[0]
        assert videos[name].shape == (6, 16, 16, 3)
    assert not torch.equal(videos["lora"], videos["plain"])
    assert torch.equal(videos["zero"], videos["plain"])


def test_exvideo_with_lora_trains_both_and_each_file_loads(dataset):  # noqa: F811
    output = dataset[0] / "exvideo_lora"
    args = run_args(dataset, output, "--mode", "exvideo,lora", *LORA, "--max-steps", "2", "--save-every", "2")
    assert train.main(args) == 0
    folder = output / CHECKPOINTS / "step-00000002"
    state = checkpointing.read_state(folder)
    assert (state["parameter_set"], state["lora"]) == ("exvideo", True)
    assert sorted(state["exports"]) == ["extension.safetensors", "extension_ema.safetensors", "lora.safetensors",
                                        "lora_ema.safetensors"]
    read = lora.read_lora(folder / "lora.safetensors")
    # the temporal blocks are trained whole by the extension: LoRA only on the spatial ones
    assert read.weights and not any(".temporal_transformer_blocks." in m for m in read.weights)
    assert read.metadata[lora.META_EXTENSION] == "extension.safetensors"
    base = load_svd(dataset[1])
    extension_only = load_svd(dataset[1], extension=folder / "extension.safetensors")  # written without LoRA names
    both = load_svd(dataset[1], extension=folder / "extension.safetensors", lora=folder / "lora.safetensors")
    outputs = [_denoise(m) for m in (base, extension_only, both)]
    assert (outputs[1] - outputs[0]).abs().max() > 1e-4 and (outputs[2] - outputs[1]).abs().max() > 1e-4
    assert both.trained_for == TrainedFor(progressive=False, clip_frames=4)


def test_settings_that_cannot_work_are_refused(dataset, capsys):  # noqa: F811
    from training.config import parse_config

    needed = ["--base", "a", "--output-dir", "o", "--data-dir", "d"]
    with pytest.raises(ValueError, match="full trains every UNet weight, so LoRA layers on top add nothing"):
        parse_config([*needed, "--mode", "full,lora"])
    with pytest.raises(ValueError, match="--lora-rank must be >= 1"):
        parse_config([*needed, "--mode", "lora", "--lora-rank", "0"])
    assert parse_config([*needed, "--mode", "lora,progressive"]).lora_scale_alpha == 16.0  # alpha 0: the rank
    assert train.main(run_args(dataset, dataset[0] / "typo", "--mode", "lora", "--lora-targets", "to_qq")) == 2
    assert "error: LoRA target 'to_qq' matches no linear layer" in capsys.readouterr().err
