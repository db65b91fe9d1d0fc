"""The `longvid` command: the README's main job at a small size, and its options and errors."""

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from longvid_core.run.cli import load_image, main, text_to_image
from longvid_core.run.pipeline import BUNDLED_MODEL, DEFAULTS_KEY, recommended_settings
from longvid_core.run.video_io import read_video
from tests.tiny import write_tiny_sgm


def test_bundled_model_is_small_and_carries_its_settings():
    assert BUNDLED_MODEL.is_file(), "the bundled small model is part of the repository"
    assert BUNDLED_MODEL.stat().st_size <= 20 * 2**20
    defaults = recommended_settings(BUNDLED_MODEL)
    assert (defaults["width"], defaults["height"], defaults["window"], defaults["chunk"]) == (32, 32, 8, 2)
    # its VAE was trained on 4-frame clips and decodes best 4 at a time (tools/small_model/bundle.py)
    assert (defaults["steps"], defaults["decode_window"], defaults["decode_overlap"]) == (16, 4, 2)


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
    assert f"6 frames 16x16, {mode}: " in capsys.readouterr().out


def test_context_sigma_comes_from_the_flag_else_the_model_file_else_clean(tmp_path, context_sigmas_seen):
    from safetensors.torch import load_file, save_file

    svd = write_tiny_sgm(tmp_path / "tiny.safetensors")
    trained = tmp_path / "trained_with_context_noise.safetensors"
    save_file(load_file(svd), trained, metadata={DEFAULTS_KEY: json.dumps({"context_sigma": 0.2})})
    small = ["--mode", "progressive", "--width", "16", "--height", "16", "--frames", "4", "--window", "2", "--chunk",
             "2", "--steps", "2", "--quiet"]
    for model, extra in ((svd, []), (trained, []), (trained, ["--context-sigma", "0.5"])):
        assert main(["generate", "--svd", str(model), "--out", str(tmp_path / "v.mp4"), *small, *extra]) == 0
    assert context_sigmas_seen == [None, 0.2, 0.5]


@pytest.fixture(scope="module")
def tiny_t2i(tmp_path_factory):
    """A tiny random Stable Diffusion 1.x-style diffusers folder, built here (no downloads)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("t2i")
    # CLIP's byte-level BPE with no merges: every letter is a token ("</w>" ends a word)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in letters + [c + "</w>" for c in letters]:
        vocab[token] = len(vocab)
    (root / "tok").mkdir()
    (root / "tok" / "vocab.json").write_text(json.dumps(vocab))
    (root / "tok" / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tok"), model_max_length=16)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                layers_per_block=1, norm_num_groups=4, cross_attention_dim=16, attention_head_dim=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        norm_num_groups=4, sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(root / "sd_tiny")
    return root / "sd_tiny"


def test_prompt_makes_the_first_frame_with_the_t2i_model(tmp_path, tiny_t2i):
    first = text_to_image(tiny_t2i, "a red ball", "", 16, 16, 5, "cpu", steps=2)
    assert first.shape == (1, 16, 16, 3) and first.dtype == torch.float32
    assert 0 <= first.min() and first.max() <= 1 and first.std() > 0.01
    assert torch.equal(first, text_to_image(tiny_t2i, "a red ball", "", 16, 16, 5, "cpu", steps=2))
    assert not torch.allclose(first, text_to_image(tiny_t2i, "a blue cube", "", 16, 16, 5, "cpu", steps=2))
    assert not torch.allclose(first, text_to_image(tiny_t2i, "a red ball", "", 16, 16, 6, "cpu", steps=2))

    svd = write_tiny_sgm(tmp_path / "tiny.safetensors")
    out, saved = tmp_path / "prompt.mp4", tmp_path / "first.png"
    assert main(["generate", "--svd", str(svd), "--prompt", "a red ball", "--t2i-model", str(tiny_t2i),
                 "--width", "16", "--height", "16", "--frames", "6", "--window", "2", "--chunk", "2", "--steps", "2",
                 "--t2i-steps", "2", "--seed", "5", "--device", "cpu", "--out", str(out), "--save-first-frame", str(saved),
                 "--quiet"]) == 0
    assert read_video(out)[0].shape == (6, 16, 16, 3)
    # the conditioning frame is the t2i image for --seed and --t2i-steps (--steps is the video's)
    assert (load_image(saved) - first).abs().max() <= 1 / 255 + 1e-6




@pytest.mark.parametrize("argv, code", [(["--help"], 0), (["generate", "--help"], 0),
                                        (["generate", "--frames", "abc"], 2), (["generate", "--mode", "bogus"], 2)])
def test_help_and_flag_errors_answer_before_torch_loads(argv, code):
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "longvid_core", *argv], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == code, done.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "longvid_core.run.cli" in imported
    heavy = {"torch", "diffusers", "transformers", "safetensors", "numpy", "av", "PIL"} & imported
    assert not heavy, heavy
    if code:
        said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
        assert len(said) == 1 and said[0].startswith("longvid: error: --"), said


def test_keyframes_last_frame_and_loop_reach_the_run(tmp_path, monkeypatch, capsys):
    from longvid_core import pipeline

    svd = write_tiny_sgm(tmp_path / "tiny.safetensors")
    pictures = []
    for i, size in enumerate(((16, 16), (16, 32))):  # the second is wider: cropped, and said so
        pictures.append(tmp_path / f"p{i}.png")
        Image.fromarray((torch.rand(*size, 3, generator=torch.Generator().manual_seed(i)) * 255).byte().numpy()).save(
            pictures[-1])
    runs, real = [], pipeline.prepare_run

    def keep(*args, **kwargs):
        runs.append(real(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(pipeline, "prepare_run", keep)
    small = ["--svd", str(svd), "--width", "16", "--height", "16", "--frames", "6", "--window", "2", "--chunk", "2",
             "--steps", "2", "--mode", "progressive", "--quiet"]
    out = tmp_path / "story.mp4"
    assert main(["generate", *small, "--keyframe", f"{pictures[0]}@2:0.5", "--last-frame", str(pictures[1]),
                 "--out", str(out)]) == 0
    assert [(g.frame, g.strength) for g in runs[-1].guides] == [(2, 0.5), (5, 1.0)]
    assert read_video(out)[0].shape[0] == 6
    assert "note: guide picture 1 (32x16) was fitted to 16x16" in capsys.readouterr().err
    loop = tmp_path / "loop.mp4"
    assert main(["generate", *small, "--loop", "--out", str(loop)]) == 0
    assert runs[-1].loop and [g.frame for g in runs[-1].guides] == [0, 6] and runs[-1].sampled_frames == 7
    assert read_video(loop)[0].shape[0] == 6


def test_interpolate_and_refine_an_input_video(tmp_path, capsys):
    from longvid_core.run.video_io import VideoWriter

    svd = write_tiny_sgm(tmp_path / "tiny.safetensors")
    source = tmp_path / "in.mp4"
    with VideoWriter(source, 5, crf=12) as writer:
        writer.write(torch.rand(4, 16, 16, 3, generator=torch.Generator().manual_seed(2)))
    small = ["--svd", str(svd), "--width", "16", "--height", "16", "--window", "2", "--chunk", "2", "--steps", "2",
             "--mode", "progressive", "--quiet"]
    assert main(["interpolate", str(source), "--factor", "3", "--out", str(tmp_path / "x3.mp4"), *small]) == 0
    frames, fps = read_video(tmp_path / "x3.mp4")
    assert frames.shape[0] == 10 and fps == 15  # (4 - 1) * 3 + 1 frames at 3 x 5 fps
    assert main(["refine", str(source), "--strength", "0.6", "--out", str(tmp_path / "r.mp4"), *small]) == 0
    frames, fps = read_video(tmp_path / "r.mp4")
    assert frames.shape[0] == 4 and fps == 5
    assert "10 frames 16x16, progressive" in capsys.readouterr().out
