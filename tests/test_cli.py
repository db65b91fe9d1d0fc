"""The `longvid` command: the README's main job at a small size, and its options and errors."""

import subprocess
import sys

import pytest
import torch
from PIL import Image

from longvid_core.cli import BUNDLED_MODEL, main, model_defaults
from longvid_core.video_io import read_video
from tests.tiny import write_tiny_sgm


def test_bundled_model_is_small_and_carries_its_settings():
    assert BUNDLED_MODEL.is_file(), "the bundled small model is part of the repository"
    assert BUNDLED_MODEL.stat().st_size <= 20 * 2**20
    defaults = model_defaults(BUNDLED_MODEL)
    assert (defaults["width"], defaults["height"], defaults["window"], defaults["chunk"]) == (32, 32, 8, 2)


def test_readme_command_at_a_small_size(tmp_path):
    # the README's first command (`python -m longvid_core generate`) with fewer frames
    out = tmp_path / "video.mp4"
    result = subprocess.run([sys.executable, "-m", "longvid_core", "generate", "--frames", "24", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert str(out.resolve()) in result.stdout  # the output path is printed at the end
    assert "denoiser calls" in result.stderr  # progress counts denoiser calls
    frames, fps = read_video(out)
    assert frames.shape == (24, 32, 32, 3) and fps == 8
    assert frames.std() > 0.02  # a picture, not a flat frame


def test_image_input_modes_and_frames_folder(tmp_path, capsys):
    svd = write_tiny_sgm(tmp_path / "tiny.safetensors")
    picture = tmp_path / "first.png"
    Image.fromarray((torch.rand(40, 56, 3) * 255).byte().numpy()).save(picture)
    for mode in ("progressive", "replacement_with_noise", "full_sequence"):
        out = tmp_path / f"{mode}.mp4"
        assert main(["generate", "--svd", str(svd), "--image", str(picture), "--width", "16", "--height", "16",
                     "--frames", "6", "--window", "2", "--chunk", "2", "--steps", "2", "--mode", mode,
                     "--out", str(out), "--save-frames", str(tmp_path / mode), "--quiet"]) == 0
        assert read_video(out)[0].shape == (6, 16, 16, 3)
        assert len(list((tmp_path / mode).glob("frame_*.png"))) == 6
    assert f"{mode}: 6 frames 16x16" in capsys.readouterr().out


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--prompt needs --t2i-model"):
        main(["generate", "--prompt", "a red ball", "--frames", "4", "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(FileNotFoundError, match="--svd: no model at"):
        main(["generate", "--svd", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(ValueError, match="multiples of 8"):
        main(["generate", "--width", "30", "--frames", "4", "--out", str(tmp_path / "x.mp4")])
    with pytest.raises(ValueError, match="use window"):
        main(["generate", "--window", "7", "--frames", "4", "--out", str(tmp_path / "x.mp4")])
