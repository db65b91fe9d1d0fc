"""Bad inputs, as a new user gives them, refused up front in one line with nothing left behind.

One table each for `longvid generate`, the trainer and the nodes' validation: every row is run and
must give exit 2 (the nodes: a message filed under the input it concerns), one line of the form
``longvid: error: <flag>: expected …, found …``, no traceback, and no file written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from longvid_core.run.cli import main
from longvid_core.run.video_io import read_video
from nodes import NODES
from nodes.validation import problem_input, validation_values
from tests.tiny import write_tiny_sgm

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--frames", "4", "--quiet"]  # the bundled model at its own small size


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "text.png").write_text("not a picture")
    (root / "empty.png").write_bytes(b"")
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype("uint8")).save(root / "ok.png")
    (root / "truncated.png").write_bytes((root / "ok.png").read_bytes()[:200])
    (root / "text.safetensors").write_text("this is not a checkpoint " * 20)
    tiny = write_tiny_sgm(root / "tiny.safetensors")
    (root / "cut.safetensors").write_bytes(tiny.read_bytes()[:5000])
    (root / "a_file").write_text("x")
    (root / "folder.mp4").mkdir()
    return root


def cli_rows(f: Path):
    """(name, arguments, flag the line names, words it holds)"""
    return [
        ("cfg inf", ["--cfg", "inf"], "--cfg", "expected a finite number"),
        ("cfg nan", ["--cfg", "nan"], "--cfg", "expected a finite number"),
        ("min-cfg -1", ["--min-cfg", "-1"], "--min-cfg", ">= 0"),
        ("noise-aug nan", ["--noise-aug-strength", "nan"], "--noise-aug-strength", "finite"),
        ("lora-strength nan", ["--lora-strength", "nan"], "--lora-strength", "finite"),
        ("lora-strength inf", ["--lora-strength", "inf"], "--lora-strength", "finite"),
        ("context-sigma inf", ["--context-sigma", "inf"], "--context-sigma", "finite"),
        ("threads -1", ["--threads", "-1"], "--threads", "found -1"),
        ("device tpu9", ["--device", "tpu9"], "--device", "cpu, cuda, cuda:N or mps"),
        ("device cuda:99", ["--device", "cuda:99"], "--device", "found cuda:99"),
        ("seed 2**70", ["--seed", str(2**70)], "--seed", str(2**64 - 1)),
        ("seed -1", ["--seed", "-1"], "--seed", "found -1"),
        ("steps abc", ["--steps", "abc"], "--steps", "a whole number"),
        ("frames 0", ["--frames", "0"], "--frames", "found 0"),
        ("frames 1e9", ["--frames", "1000000000"], "--frames", "1000000"),
        ("width 0", ["--width", "0"], "--width", "found 0"),
        ("motion bucket -1", ["--motion-bucket-id", "-1"], "--motion-bucket-id", "found -1"),
        ("output fps 0", ["--output-fps", "0"], "--output-fps", "found 0"),
        ("mode foo", ["--mode", "foo"], "--mode", "expected one of"),
        ("window 7", ["--mode", "progressive", "--window", "7"], "--window", "use window 6 or 8"),
        ("partitions 3", ["--mode", "progressive", "--partitions", "3"], "--partitions", "use one of"),
        ("context-sigma off progressive", ["--mode", "full_sequence", "--context-sigma", "0.5"], "--context-sigma",
         "progressive"),
        ("decode overlap", ["--decode-window", "4", "--decode-overlap", "3"], "--decode-overlap", "at most half"),
        ("huge size", ["--width", "16384", "--height", "16384"], "--width", "decode_window x 128 channels"),
        ("out png", ["--out", str(f / "x.png")], "--out", "ending in .mp4"),
        ("out folder", ["--out", str(f / "folder.mp4")], "--out", "the folder"),
        ("out under a file", ["--out", str(f / "a_file" / "x.mp4")], "--out", "in the way"),
        ("out unwritable", ["--out", "/proc/longvid/x.mp4"], "--out", "a folder this user can write to"),
        ("save-frames onto a file", ["--save-frames", str(f / "a_file")], "--save-frames", "the file"),
        ("svd missing", ["--svd", str(f / "missing.safetensors")], "--svd", "nothing at"),
        ("svd text", ["--svd", str(f / "text.safetensors")], "--svd", "could not be read"),
        ("svd cut", ["--svd", str(f / "cut.safetensors")], "--svd", "could not be read"),
        ("extension text", ["--extension", str(f / "text.safetensors")], "--extension", "could not be read"),
        ("extension is svd", ["--svd", str(f / "tiny.safetensors"), "--extension", str(f / "tiny.safetensors"),
                              "--width", "16", "--height", "16"], "--extension", "expected an ExVideo"),
        ("lora missing", ["--lora", str(f / "none.safetensors")], "--lora", "nothing at"),
        ("image text", ["--image", str(f / "text.png")], "--image", "not a picture"),
        ("image empty", ["--image", str(f / "empty.png")], "--image", "(0 bytes)"),
        ("image truncated", ["--image", str(f / "truncated.png")], "--image", "cannot be read"),
        ("image missing", ["--image", str(f / "none.png")], "--image", "nothing at"),
        ("image and prompt", ["--image", str(f / "ok.png"), "--prompt", "a cat"], "--prompt", "not both"),
        ("prompt alone", ["--prompt", "a cat"], "--prompt", "--t2i-model"),
        ("t2i folder missing", ["--prompt", "a cat", "--t2i-model", str(f / "nowhere")], "--t2i-model",
         "model_index.json"),
        ("width 30", ["--width", "30"], "--width", "a multiple of 8"),
        ("full sequence too long", ["--mode", "full_sequence", "--frames", "40", "--svd", str(f / "tiny.safetensors"),
                                    "--width", "16", "--height", "16"], "--frames", "full_sequence"),
        ("keyframe past the end", ["--keyframe", f"{f / 'ok.png'}@4"], "--keyframe", "within the video's frames 0..3"),
        ("keyframe without a frame", ["--keyframe", str(f / "ok.png")], "--keyframe", "PICTURE@FRAME[:STRENGTH]"),
        ("keyframe strength 2", ["--keyframe", f"{f / 'ok.png'}@1:2"], "--keyframe", "a strength from 0 to 1"),
        ("two keyframes at one frame", ["--keyframe", f"{f / 'ok.png'}@1", "--keyframe", f"{f / 'ok.png'}@1"],
         "--keyframe", "one guide per frame"),
        ("keyframe at the last frame too", ["--keyframe", f"{f / 'ok.png'}@3", "--last-frame", str(f / "ok.png")],
         "--last-frame", "one guide per frame"),
        ("keyframe picture missing", ["--keyframe", f"{f / 'none.png'}@1"], "--keyframe", "nothing at"),
        ("last frame not a picture", ["--last-frame", str(f / "text.png")], "--last-frame", "not a picture"),
        ("loop and last frame", ["--loop", "--last-frame", str(f / "ok.png")], "--loop", "not both"),
        ("loop shorter than a window", ["--loop", "--mode", "progressive"], "--frames", "at least window + chunk"),
    ]


ROW_NAMES = [row[0] for row in cli_rows(Path("."))]


@pytest.mark.parametrize("row", ROW_NAMES)
def test_each_cli_user_error_is_one_line_exit_2_and_leaves_nothing(row, files, tmp_path, capsys):
    name, argv, flag, words = next(r for r in cli_rows(files) if r[0] == row)
    out = tmp_path / "video.mp4"
    argv = ["generate", *SMALL, *argv] + ([] if "--out" in argv else ["--out", str(out)])
    assert run_main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"longvid: error: {flag}: expected "), lines[0]
    assert ", found " in lines[0] and words in lines[0], lines[0]
    assert not list(tmp_path.iterdir()), "a refused run writes nothing"


VIDEO_COMMAND_ROWS = [  # (name, arguments after the input, input, flag the line names, words it holds)
    ("factor 1", ["interpolate", "--factor", "1"], "video", "--factor", "from 2 to 16"),
    ("no factor", ["interpolate"], "video", "--factor", "expected a value"),
    ("strength 1.5", ["refine", "--strength", "1.5"], "video", "--strength", "from 0 to 1"),
    ("one-frame input", ["interpolate", "--factor", "2"], "picture", "IN", "at least 2 frames"),
    ("input missing", ["refine", "--strength", "0.5"], "missing", "IN", "nothing at"),
    ("input not a video", ["refine", "--strength", "0.5"], "text", "IN", "cannot be read"),
]


@pytest.mark.parametrize("row", [r[0] for r in VIDEO_COMMAND_ROWS])
def test_each_video_command_user_error_is_one_line_and_leaves_nothing(row, files, tmp_path, capsys):
    from longvid_core.run.video_io import VideoWriter

    name, (command, *argv), source, flag, words = next(r for r in VIDEO_COMMAND_ROWS if r[0] == row)
    inputs = {"video": files / "in.mp4", "picture": files / "ok.png", "missing": files / "none.mp4",
              "text": files / "text.safetensors"}
    if not inputs["video"].exists():
        with VideoWriter(inputs["video"], 5) as writer:
            writer.write(torch.rand(3, 32, 32, 3))
    out = tmp_path / "video.mp4"
    assert run_main([command, str(inputs[source]), *argv, "--quiet", "--out", str(out)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"longvid: error: {flag}: expected ") and words in lines[0], lines
    assert not list(tmp_path.iterdir()), "a refused run writes nothing"


def run_main(argv) -> int:
    """The exit status of ``longvid ARGV``: argparse's refusals exit, LongVid's own return."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def test_nan_weights_stop_at_the_first_call_naming_the_damaged_tensor(files, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    state = load_file(files / "tiny.safetensors")
    for part, prefix in (("unet", "model.diffusion_model.input_blocks"), ("vae", "first_stage_model.decoder.up")):
        key = next(k for k in state if k.startswith(prefix) and k.endswith("weight"))
        damaged = dict(state, **{key: torch.full_like(state[key], float("nan"))})
        path = tmp_path / f"nan_{part}.safetensors"
        save_file(damaged, str(path))
        out = tmp_path / f"{part}.mp4"
        started = time.perf_counter()
        code = main(["generate", "--svd", str(path), "--width", "16", "--height", "16", "--frames", "6", "--window",
                     "2", "--chunk", "2", "--steps", "2", "--quiet", "--out", str(out)])
        assert code == 2 and time.perf_counter() - started < 60
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "NaN/Inf" in lines[0] and "the weights are damaged" in lines[0], lines
        assert ("denoiser call 1" if part == "unet" else "decoding frames 0..") in lines[0]
        assert f"{part}." in lines[0]  # the damaged tensor is named
        assert not out.exists() and not list(tmp_path.glob("*.partial*"))


def test_sixteen_bit_and_other_deep_images_are_scaled_not_clipped(tmp_path):
    from longvid_core.run.inputs import read_image

    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode.startswith("I")
    image = read_image(tmp_path / "grey16.png")
    assert image.shape == (1, 32, 32, 3)
    torch.testing.assert_close(image[0, ..., 0], torch.from_numpy(ramp / 65535.0).float())
    assert 0.49 < image.mean().item() < 0.51  # clipped to white, the mean would be ~1
    # float images as they are; palette and alpha images through RGB
    Image.fromarray(np.full((8, 8), 0.25, np.float32), mode="F").save(tmp_path / "float.tif")
    assert torch.allclose(read_image(tmp_path / "float.tif"), torch.tensor(0.25))
    Image.new("P", (8, 8), 3).save(tmp_path / "palette.png")
    Image.new("LA", (8, 8), (128, 255)).save(tmp_path / "grey_alpha.png")
    assert read_image(tmp_path / "grey_alpha.png").mean().item() == pytest.approx(128 / 255)
    assert read_image(tmp_path / "palette.png").shape == (1, 8, 8, 3)


def test_an_existing_video_survives_a_failed_run_and_a_good_run_replaces_it(tmp_path, capsys):
    out = tmp_path / "video.mp4"
    assert main(["generate", "--frames", "6", "--quiet", "--out", str(out)]) == 0
    good = out.read_bytes()
    assert read_video(out)[0].shape[0] == 6 and not list(tmp_path.glob("*.partial*"))
    assert run_main(["generate", "--frames", "6", "--cfg", "nan", "--quiet", "--out", str(out)]) == 2
    assert main(["generate", "--frames", "6", "--svd", str(tmp_path / "gone.safetensors"), "--out", str(out)]) == 2
    assert out.read_bytes() == good
    assert main(["generate", "--frames", "10", "--quiet", "--out", str(out)]) == 0
    assert read_video(out)[0].shape[0] == 10


@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_an_interrupted_run_keeps_its_frames_in_a_partial_file_and_the_old_video(how, tmp_path):
    out = tmp_path / "video.mp4"
    out.write_bytes(b"an earlier good video")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    process = subprocess.Popen([sys.executable, "-m", "longvid_core", "generate", "--frames", "2000", "--out",
                                str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               # a runner started in the background ignores SIGINT, and a child would inherit that
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    partial = tmp_path / "video.partial.mp4"
    deadline = time.monotonic() + 240
    # a fragment holds a second of video (8 frames) and is flushed as made: wait for a few
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 6000):
        time.sleep(0.5)
    process.send_signal(getattr(signal, how))
    _, err = process.communicate(timeout=120)
    assert out.read_bytes() == b"an earlier good video"
    frames, _ = read_video(partial)
    assert frames.shape[0] >= 8 and frames.std() > 0.02
    if how != "SIGKILL":
        assert process.returncode == 130 and "Traceback" not in err
        assert err.strip().splitlines()[-1] == (f"longvid: {'interrupted' if how == 'SIGINT' else 'terminated'}; "
                                                f"{frames.shape[0]} finished frames kept in {partial}")


# ---------------------------------------------------------------------------------------------
# The trainer


def trainer_rows(f: Path):
    return [
        ("output-dir is a file", ["--output-dir", str(f / "a_file")], "--output-dir: expected a folder"),
        ("learning rate nan", ["--learning-rate", "nan"], "--learning-rate: expected a finite number"),
        ("learning rate 0", ["--learning-rate", "0"], "--learning-rate: expected a number > 0"),
        ("frames -1", ["--frames", "-1"], "--frames: expected 0 or more, found -1"),
        ("noise aug inf", ["--noise-aug-strength", "inf"], "--noise-aug-strength: expected a finite number"),
    ]


@pytest.mark.parametrize("row", [r[0] for r in trainer_rows(Path("."))])
def test_each_trainer_user_error_is_one_line_and_leaves_nothing(row, files, tmp_path, capsys):
    from training import train
    from training.smoke import smoke_args

    _, argv, words = next(r for r in trainer_rows(files) if r[0] == row)
    output = tmp_path / "run"
    args = smoke_args(files / "tiny.safetensors", tmp_path / "videos", output, *argv)
    assert train.main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, err
    assert not output.exists()


def test_the_trainer_names_damaged_base_weights_and_leaves_no_run_folder(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from tests.tiny import write_training_data
    from training import train
    from training.smoke import smoke_args

    (tmp_path / "data").mkdir()
    _, base, videos = write_training_data(tmp_path / "data", suffixes=(".mp4",))
    state = load_file(base)
    key = next(k for k in state if k.startswith("model.diffusion_model.") and k.endswith("weight"))
    save_file(dict(state, **{key: torch.full_like(state[key], float("nan"))}), str(tmp_path / "nan.safetensors"))
    output = tmp_path / "run"
    assert train.main(smoke_args(tmp_path / "nan.safetensors", videos, output, "--no-gradient-checkpointing")) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error: --base: expected finite weights, found NaN/Inf in unet.") and "\n" not in line
    assert "learning-rate" not in line
    assert not output.exists()  # no skipped_videos.json or log left by a refused run


def test_a_refused_data_folder_leaves_no_skipped_videos_json(tmp_path, capsys):
    from training import train
    from training.smoke import smoke_args

    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "broken.mp4").write_bytes(b"not a video")
    output = tmp_path / "run"
    assert train.main(smoke_args(write_tiny_sgm(tmp_path / "base.safetensors"), videos, output)) == 2
    assert "broken.mp4" in capsys.readouterr().err
    assert not output.exists()


def test_a_resume_accepts_the_same_data_folder_spelt_relative_or_absolute(tmp_path, monkeypatch):
    from training.resume_check import normalised

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    assert normalised("data_dir", "data") == normalised("data_dir", str(tmp_path / "data"))
    assert normalised("data_dir", "./data/") == normalised("data_dir", str(tmp_path / "data"))
    assert normalised("learning_rate", 1e-5) == 1e-5


# ---------------------------------------------------------------------------------------------
# The nodes' validation: refused before anything runs, under the input concerned


def node_rows():
    """(node, inputs as a prompt holds them, the input the problem is filed under, words)"""
    sample = {"frames": 24, "mode": "progressive", "window": 8, "chunk": 2, "steps": 16, "cfg": 2.5,
              "min_cfg": 1.0, "seed": 0, "model": ["1", 0], "cond": ["2", 0]}
    video = {**sample, "filename_prefix": "video/LongVid", "frame_rate": 8.0, "crf": 19, "decode_window": 14,
             "overlap": 4}
    loader = {"ckpt_name": "svd_xt.safetensors", "extension": "none", "dtype": "auto"}
    return [
        ("LongVidLoadModel", loader, "ckpt_name", "svd_xt.safetensors"),
        ("LongVidLoadModel", {**loader, "ckpt_name": None, "extension": "gone.safetensors"}, "extension",
         "gone.safetensors"),
        ("LongVidLoadModel", {**loader, "ckpt_name": None, "lora": "gone.safetensors"}, "lora", "gone"),
        ("LongVidLoadModel", {**loader, "ckpt_name": None, "dtype": "fp8"}, "dtype", "expected one of"),
        ("LongVidLoadModel", {**loader, "ckpt_name": None, "lora_strength": float("nan")}, "lora_strength", "finite"),
        ("LongVidSample", {**sample, "mode": "sideways"}, "mode", "expected one of"),
        ("LongVidSample", {**sample, "cfg": float("inf")}, "cfg", "finite"),
        ("LongVidSample", {**sample, "window": 7}, "window", "use window 6 or 8"),
        ("LongVidSample", {**sample, "steps": 15}, "steps", "multiple of window/chunk"),
        ("LongVidSample", {**sample, "partitions": 3}, "partitions", "use one of"),
        ("LongVidSample", {**sample, "mode": "full_sequence", "lookahead": True}, "lookahead", "progressive"),
        ("LongVidSampleToVideo", {**video, "overlap": 9}, "overlap", "at most half"),
        ("LongVidSampleToVideo", {**video, "frame_rate": float("nan")}, "frame_rate", "finite"),
        ("LongVidSampleToVideo", {**video, "output_path": "clip.png"}, "output_path", ".mp4"),
        ("LongVidSampleToVideo", {**video, "output_path": "/proc/longvid/clip.mp4"}, "output_path", "write to"),
        ("LongVidSaveVideo", {"model": ["1", 0], "samples": ["3", 0], "filename_prefix": "v", "frame_rate": 8.0,
                              "crf": 19, "decode_window": 4, "overlap": 3}, "overlap", "at most half"),
        ("LongVidCondition", {"model": ["1", 0], "image": ["4", 0], "width": 1000, "height": 576,
                              "keyframe_starts": "0", "fps": 6, "motion_bucket_id": 127, "augmentation": 0.02},
         "width", "multiple of 64"),
        ("LongVidCondition", {"model": ["1", 0], "image": ["4", 0], "width": 1024, "height": 576,
                              "keyframe_starts": "0, 5, 3", "fps": 6, "motion_bucket_id": 127,
                              "augmentation": float("nan")}, "augmentation", "finite"),
        ("LongVidCondition", {"model": ["1", 0], "image": ["4", 0], "width": 1024, "height": 576,
                              "keyframe_starts": "0, 5, 3", "fps": 6, "motion_bucket_id": 127,
                              "augmentation": 0.0}, "keyframe_starts", "must increase"),
        ("LongVidSettings", {"mode": "progressive", "window": 24, "chunk": 5, "steps": 24}, "window",
         "multiple of chunk"),
    ]


@pytest.mark.parametrize("index", range(len(node_rows())))
def test_each_node_problem_is_refused_at_validation_under_its_input(index, monkeypatch, tmp_path):
    monkeypatch.setenv("LONGVID_OUTPUT_DIR", str(tmp_path))
    node_id, inputs, anchor, words = node_rows()[index]
    inputs = {k: v for k, v in inputs.items() if v is not None}
    cls = NODES[node_id]
    problem = cls.validate_inputs(**validation_values(cls, {}, inputs))
    assert problem is not True and words in problem, problem
    assert problem.input == anchor
    # ComfyUI files it under the input the V3 node names when it validates this prompt
    assert problem_input(cls, cls.SPEC, {"7": {"class_type": node_id, "inputs": inputs}}) == anchor
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("node_id", sorted(NODES))
def test_every_float_and_combo_widget_of_every_node_is_checked_at_validation(node_id):
    # NaN passes ComfyUI's own min/max check and a V3 combo value is not checked at all: each node refuses both
    import inspect

    cls = NODES[node_id]
    checked = [i for i in cls.SPEC.inputs if i.kind in ("FLOAT", "COMBO")]
    assert not checked or hasattr(cls, "validate_inputs"), node_id
    for widget in checked:
        assert widget.name in inspect.signature(cls.validate_inputs).parameters, (node_id, widget.name)
        problem = cls.validate_inputs(**{widget.name: float("nan") if widget.kind == "FLOAT" else "bogus"})
        assert problem is not True and problem.input == widget.name, (node_id, widget.name, problem)


def test_comfyui_reads_the_concerned_input_from_the_signature_just_before_validating():
    # what ComfyUI 0.3.64 does for a V3 node: getfullargspec of the class's validate_inputs (a classmethod;
    # first_real_override reads its __func__), then call it with the named inputs only
    import inspect
    import types

    from nodes.validation import PlacedValidation

    plain = NODES["LongVidSampleToVideo"]
    prompt = {}
    node = type("V3Node", (), {"validate_inputs": classmethod(PlacedValidation(plain, plain.SPEC, lambda: prompt)),
                               "hidden": types.SimpleNamespace(unique_id="7")})
    assert inspect.getfullargspec(node.validate_inputs).args == ["cls", "window"]
    assert node.validate_inputs.__func__ is not None
    inputs = {"frames": 24, "mode": "progressive", "window": 8, "chunk": 2, "steps": 16, "cfg": 2.5, "min_cfg": 1.0,
              "seed": 0, "filename_prefix": "v", "frame_rate": 8.0, "crf": 19, "decode_window": 14, "overlap": 4,
              "output_path": "clip.png", "model": ["1", 0], "cond": ["2", 0]}
    prompt.update({"7": {"class_type": "LongVidSampleToVideo", "inputs": inputs}})
    assert inspect.getfullargspec(node.validate_inputs).args == ["cls", "output_path"]
    problem = node.validate_inputs(output_path="clip.png")
    assert problem.input == "output_path" and "expected an .mp4 file name" in problem
    inputs["output_path"] = "clip.mp4"
    assert inspect.getfullargspec(node.validate_inputs).args == ["cls", "window"]
    assert node.validate_inputs(window=8) is True


def test_a_valid_prompt_is_filed_under_the_usual_input():
    cls = NODES["LongVidSample"]
    inputs = {"frames": 24, "mode": "progressive", "window": 8, "chunk": 2, "steps": 16, "cfg": 2.5,
              "min_cfg": 1.0, "seed": 0}
    assert cls.validate_inputs(**inputs) is True
    assert problem_input(cls, cls.SPEC, {"7": {"class_type": "LongVidSample", "inputs": inputs}}) == "window"
    assert problem_input(cls, cls.SPEC, {}) == cls.SPEC.report_under


def test_the_base_warning_covers_both_extension_layouts(tmp_path):
    from longvid_core import load_svd
    from longvid_core.networks import exvideo
    from longvid_core.weights import exvideo_file

    base = write_tiny_sgm(tmp_path / "base.safetensors", seed=0)
    other = write_tiny_sgm(tmp_path / "other.safetensors", seed=5)
    model = load_svd(base)
    exvideo.extend_unet(model, 8)
    for layout in ("longvid", "diffsynth"):
        path = exvideo_file.save_extension(model, tmp_path / f"{layout}.safetensors", layout=layout)
        assert not load_svd(base, extension=path).warnings
        warnings = load_svd(other, extension=path).warnings
        assert len(warnings) == 1 and "base" in warnings[0], (layout, warnings)


def test_env_var_for_the_output_folder_is_the_one_the_nodes_read():
    from nodes import runtime

    assert runtime.ENV_OUTPUT == "LONGVID_OUTPUT_DIR"


def test_an_internal_error_keeps_its_traceback(monkeypatch, tmp_path):
    from longvid_core.run import cli

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "synthetic_first_frame", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["generate", *SMALL, "--out", str(tmp_path / "x.mp4")])


def test_a_non_finite_lora_strength_is_refused_by_the_loader_too(files):
    from longvid_core import InputError, load_svd

    with pytest.raises(InputError, match="lora_strength: expected a finite number, found nan"):
        load_svd(files / "tiny.safetensors", lora_strength=float("nan"))


def test_rows_cover_what_the_issue_lists():
    listed = json.dumps(cli_rows(Path("f")))
    for flag in ("--cfg", "--noise-aug-strength", "--lora-strength", "--threads", "--device", "--seed", "--out",
                 "--save-frames", "--svd", "--image", "--frames", "--width"):
        assert f'"{flag}"' in listed
