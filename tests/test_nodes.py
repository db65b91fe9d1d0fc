"""The ComfyUI nodes run directly, without ComfyUI, on a tiny SVD written in the real file layouts.

The tiny checkpoint's VAE has SVD's 8x downscale (four levels), so the nodes' real rules (sizes in
multiples of 64) hold and 64x64 images give 8x8 latents that sample in a fraction of a second.
"""

import asyncio
import importlib.util
import inspect
import os
import re
import sys
from pathlib import Path

import pytest
import torch

import nodes as node_pack
from longvid_core import pipeline
from longvid_core import sampling
from longvid_core import SVDModel, save_svd
from longvid_core.evaluation.schedule_plot import schedule_layout
from longvid_core.evaluation.tiny import TINY_VAE, randomize_, tiny_clip, tiny_unet
from longvid_core.networks import exvideo
from longvid_core.networks.vae import VAE_SCALE, build_vae
from longvid_core.run.frames import cover_crop
from longvid_core.run.video_io import read_video
from longvid_core.sampling.schedules import get_sigmas_karras, progressive_table
from longvid_core.weights import exvideo_file
from nodes import model_cache, runtime

NODES = node_pack.NODES
REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = "svd_xt.safetensors"
EXTENSION = "ExVideo-SVD-128f-v1/model.fp16.safetensors"  # the release's folder and file name
EXTENSION_FRAMES = 8  # the tiny extension's table: small enough to hit the limit in a test

# ----------------------------------------------------------------------------------- fixtures


def tiny_vae8(seed: int = 1):
    """The tiny VAE with SVD's 8x downscale (4 levels)."""
    config = dict(TINY_VAE, down_block_types=("DownEncoderBlock2D",) * 4, block_out_channels=(32, 32, 32, 32))
    vae = randomize_(build_vae(config), seed)
    with torch.no_grad():  # the SGM layout has no quant_conv: only the identity is representable
        vae.quant_conv.weight.copy_(torch.eye(8).reshape(8, 8, 1, 1))
        vae.quant_conv.bias.zero_()
    return vae.eval()


def write_tiny_checkpoint(folder: Path, extension_folder: Path | None = None, seed: int = 0) -> Path:
    """A tiny SVD (SGM single file, 8x VAE) as ``svd_xt.safetensors`` in ``folder``; with
    ``extension_folder``, also a tiny ExVideo extension in the release's layout and file name."""
    model = SVDModel(tiny_unet(seed), tiny_vae8(seed + 1), tiny_clip(seed + 2), source="tiny")
    path = save_svd(model, Path(folder) / CHECKPOINT)
    if extension_folder is not None:
        exvideo.extend_unet(model.unet, EXTENSION_FRAMES)
        exvideo_file.save_extension(model, Path(extension_folder) / EXTENSION, layout="diffsynth")
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("longvid_nodes")
    checkpoints, extensions, output = root / "checkpoints", root / "longvid_extensions", root / "output"
    for folder in (checkpoints, extensions / "ExVideo-SVD-128f-v1", output):
        folder.mkdir(parents=True)
    write_tiny_checkpoint(checkpoints, extensions)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LONGVID_CHECKPOINTS_DIR", str(checkpoints))
        mp.setenv("LONGVID_EXTENSIONS_DIR", str(extensions))
        mp.setenv("LONGVID_OUTPUT_DIR", str(output))
        yield {"checkpoints": checkpoints, "extensions": extensions, "output": output}
    model_cache.clear_cache()


def load(extension="none", dtype="auto"):
    return NODES["LongVidLoadModel"]().load(CHECKPOINT, extension, dtype)[0]


@pytest.fixture
def model(folders):
    return load()


def image(batch=1, height=80, width=100, seed=0):
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def condition(model, images=None, starts="0", size=64):
    images = image() if images is None else images
    return NODES["LongVidCondition"]().condition(model, images, size, size, starts, 6, 127, 0.02)


SMALL = dict(mode="progressive", window=4, chunk=2, steps=2, cfg=1.0, min_cfg=1.0, seed=0)


def sample(model, cond, frames=6, prefix=None, **overrides):
    args = {**SMALL, **overrides}
    return NODES["LongVidSample"]().sample(model, cond, frames, args["mode"], args["window"], args["chunk"],
                                           args["steps"], args["cfg"], args["min_cfg"], args["seed"], prefix=prefix)[0]


class Recorder:
    """Stands in for ComfyUI's ProgressBar."""

    def __init__(self, total):
        self.total = total
        self.updates = []

    def update_absolute(self, value, total=None, preview=None):
        self.updates.append((value, total, preview))


@pytest.fixture
def bars(monkeypatch):
    made = []

    def progress_bar(total):
        made.append(Recorder(total))
        return made[-1]

    monkeypatch.setattr(runtime, "progress_bar", progress_bar)
    return made


def count_denoiser_calls(model, monkeypatch):
    calls = []
    original = model.svd.denoise

    def counting(x, sigma, cond):
        calls.append(x.shape[1])
        return original(x, sigma, cond)

    monkeypatch.setattr(model.svd, "denoise", counting)
    return calls


# ----------------------------------------------------------------------------------- the pack


def test_pack_imports_the_comfyui_way_without_comfyui():
    """ComfyUI imports the pack folder's __init__.py as a package; it must work with no ComfyUI."""
    spec = importlib.util.spec_from_file_location("longvid_pack_under_test", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        # without ComfyUI there is nothing to register with: a clear message if it is asked anyway
        with pytest.raises(ImportError, match=r"needs ComfyUI's node API module comfy_api.v0_0_2 \(ComfyUI 0.3"):
            asyncio.run(module.comfy_entrypoint())
    finally:
        sys.modules.pop(spec.name, None)
    assert set(module.NODES) == set(NODES)
    # V3 registration only: with NODE_CLASS_MAPPINGS ComfyUI would load the pack the V1 way
    assert callable(module.comfy_entrypoint) and not hasattr(module, "NODE_CLASS_MAPPINGS")
    assert not runtime.IN_COMFYUI


def test_node_ids_and_schemas_are_well_formed():
    assert set(NODES) == {
        "LongVidLoadModel", "LongVidCondition", "LongVidEncodeFrames", "LongVidSample", "LongVidDecode",
        "LongVidSaveVideo", "LongVidSampleToVideo", "LongVidScheduleView", "LongVidSettings", "LongVidGuides",
        "LongVidVideoGuides",
    }
    for node_id, cls in NODES.items():
        spec = cls.SPEC
        assert spec.node_id == node_id and node_id.startswith("LongVid") and spec.category == "LongVid"
        inputs = spec.input_names
        assert len(set(inputs)) == len(inputs) and not set(inputs) & {o.name for o in spec.outputs}, node_id
        signature = inspect.signature(getattr(cls, spec.function))
        assert set(signature.parameters) - {"self"} == set(inputs), node_id
        if hasattr(cls, "validate_inputs"):  # ComfyUI passes only inputs it names; names must exist
            assert set(inspect.signature(cls.validate_inputs).parameters) <= set(inputs), node_id
            assert cls.validate_inputs() is True  # everything linked: nothing to say yet


def test_loader_lists_files_from_the_folders(folders):
    spec = NODES["LongVidLoadModel"].SPEC
    assert spec.input("ckpt_name").choices() == [CHECKPOINT]
    assert spec.input("extension").choices() == ["none", EXTENSION]
    with pytest.raises(ValueError, match="ckpt_name: expected one of svd.*checkpoints folder.*found 'missing"):
        NODES["LongVidLoadModel"]().load("missing.safetensors", "none", "auto")
    from nodes import runtime

    with pytest.raises(FileNotFoundError, match="missing.safetensors.*checkpoints.*LONGVID_CHECKPOINTS_DIR"):
        runtime.full_path(runtime.CHECKPOINTS, "missing.safetensors")
    absolute = NODES["LongVidLoadModel"]().load(str(folders["checkpoints"] / CHECKPOINT), "none", "auto")[0]
    assert absolute is load()  # absolute path and folder name are the same file: the same cached model


# ----------------------------------------------------------------------------------- end to end


def test_image_to_frames_end_to_end(model):
    cond, fitted = condition(model)
    assert [start for start, _ in cond] == [0] and fitted.shape == (1, 64, 64, 3)
    latent = sample(model, cond, frames=6)
    assert latent["samples"].shape == (6, 4, 8, 8)  # ComfyUI's layout: frames on the batch axis
    frames = NODES["LongVidDecode"]().decode(model, latent, 4, 2)[0]
    assert frames.shape == (6, 64, 64, 3) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1


def test_decode_also_gives_the_frames_as_a_video_with_its_frame_rate(model):
    from fractions import Fraction

    latent = sample(model, condition(model)[0], frames=3)
    frames, video = NODES["LongVidDecode"]().decode(model, latent, 4, 1, frame_rate=7.5)
    assert video.images is frames and video.frame_rate == Fraction(15, 2)  # the same tensor: no copy
    assert NODES["LongVidDecode"]().decode(model, latent, 4, 1)[1].frame_rate == 8  # an old workflow's default
    assert NODES["LongVidDecode"].validate_inputs(frame_rate=0.0) == "frame_rate: expected a value from 0.1 to 240.0, found 0.0"


def test_latent_output_is_unscaled_like_comfyui_vae_encode(model):
    """ComfyUI's LATENT holds raw VAE latents; the sampler works in scaled ones."""
    cond, _ = condition(model)
    latent = sample(model, cond, frames=2, mode="full_sequence")
    keyframes = [(s, c) for s, c in cond]
    direct = sampling.sample_full_sequence(model.svd.denoise, keyframes, 2, (1, 4, 8, 8),
                                           get_sigmas_karras(2), seed=0, cfg=1.0, min_cfg=1.0)
    torch.testing.assert_close(latent["samples"], direct[0] / VAE_SCALE)


def test_resize_rule_scales_to_cover_then_centre_crops():
    wide = torch.zeros(1, 64, 128, 3)
    wide[:, :, :32, 0] = 1.0  # red left quarter
    wide[:, :, 32:96, 1] = 1.0  # green middle half
    wide[:, :, 96:, 2] = 1.0  # blue right quarter
    square = cover_crop(wide, 64, 64)
    assert square.shape == (1, 64, 64, 3)
    assert torch.equal(square, torch.tensor([0.0, 1.0, 0.0]).expand(1, 64, 64, 3))  # only the middle is kept
    tall = cover_crop(wide.transpose(1, 2), 64, 128)  # 128x64 (h x w) -> 128 tall, 64 wide: same aspect, resize only
    assert tall.shape == (1, 128, 64, 3)
    assert cover_crop(square, 64, 64) is square


def test_keyframes_each_image_takes_over_at_its_start(model):
    pair = torch.stack([torch.zeros(64, 64, 3), torch.ones(64, 64, 3)])
    cond, fitted = condition(model, pair, "0, 4")
    assert [start for start, _ in cond] == [0, 4] and fitted.shape == (2, 64, 64, 3)
    assert not torch.equal(cond[0][1].concat_latent, cond[1][1].concat_latent)
    latent = sample(model, cond, frames=8)
    assert latent["samples"].shape == (8, 4, 8, 8)
    one = sample(model, condition(model, pair[:1])[0], frames=8)
    # frames before the second keyframe's window are untouched by it; later ones follow it
    assert not torch.equal(latent["samples"][4:], one["samples"][4:])


def test_keyframe_count_must_match_the_batch(model):
    with pytest.raises(ValueError,
                       match=r"one start frame per image of the batch \(3\), found 2 start frame\(s\) \[0, 48\].*'0, 48, 96'"):
        condition(model, image(batch=3), "0, 48")


def test_keyframe_past_the_end_is_refused_before_sampling(model, monkeypatch):
    cond, _ = condition(model, image(batch=2), "0, 40")
    calls = count_denoiser_calls(model, monkeypatch)
    with pytest.raises(ValueError, match=r"keyframe_starts: expected starts within the video's frames 0..5.*found \[40\] past the end"):
        sample(model, cond, frames=6)
    assert calls == []


def test_prefix_extends_a_video_and_comes_first_in_the_output(model):
    video = torch.rand(5, 72, 72, 3, generator=torch.Generator().manual_seed(4))
    prefix, last = NODES["LongVidEncodeFrames"]().encode(model, video, 64, 64)
    assert prefix["samples"].shape == (5, 4, 8, 8) and last.shape == (1, 64, 64, 3)
    cond, _ = condition(model, last)
    latent = sample(model, cond, frames=4, prefix=prefix)
    assert latent["samples"].shape == (9, 4, 8, 8)
    torch.testing.assert_close(latent["samples"][:5], prefix["samples"], rtol=0, atol=1e-6)
    for mode in ("replacement_without_noise", "replacement_with_noise"):
        assert sample(model, cond, frames=3, prefix=prefix, mode=mode)["samples"].shape == (8, 4, 8, 8)


def test_prefix_of_another_size_is_refused(model):
    cond, _ = condition(model)
    with pytest.raises(ValueError, match="prefix latents are 16x16 but the conditioning is 8x8"):
        sample(model, cond, frames=2, prefix={"samples": torch.zeros(3, 4, 16, 16)})
    with pytest.raises(ValueError, match="full_sequence mode cannot extend a video"):
        sample(model, cond, frames=2, prefix={"samples": torch.zeros(3, 4, 8, 8)}, mode="full_sequence")


# ----------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("node_id, values, message", [
    ("LongVidSample", dict(mode="progressive", window=5, chunk=2, steps=24),
     r"window: expected a multiple of chunk \(2\).*found 5; use window 4 or 6"),
    ("LongVidSample", dict(mode="progressive", window=24, chunk=2, steps=20),
     r"steps: expected a multiple of window/chunk = 24/2 = 12.*found 20; use steps 12 or 24"),
    ("LongVidSampleToVideo", dict(mode="progressive", window=8, chunk=3, steps=8), "use window 6 or 9"),
    ("LongVidSample", dict(mode="sideways"), r"mode: expected one of auto, progressive.*found 'sideways'"),
    ("LongVidSample", dict(mode="progressive", window=8, chunk=2, steps=8, partitions=3),
     r"partitions: expected a divisor of the window's 4 chunks.*found 3; use one of \[1, 2, 4\]"),
    ("LongVidSample", dict(mode="full_sequence", lookahead=True), "lookahead: expected off outside the "
                                                                  r"progressive mode \(lookahead is for progressive only\)"),
    ("LongVidSampleToVideo", dict(mode="context_windows", window=6, chunk=2, context_overlap=8),
     r"context_overlap: expected fewer frames than the context window of window \+ chunk = 8, found 8"),
    ("LongVidSample", dict(frames=0), "frames: expected a value from 1 to 1000000, found 0"),
    ("LongVidSample", dict(mode="full_sequence", context_sigma=0.3), "context noise is for progressive only"),
    ("LongVidSampleToVideo", dict(context_sigma=-1.0), "context_sigma: expected a value from 0.0 to 10.0, found -1.0"),
    ("LongVidCondition", dict(width=1000, height=576), r"width: expected a multiple of 64.*found 1000; use 960 or 1024"),
    ("LongVidEncodeFrames", dict(width=512, height=100), r"height: expected a multiple of 64.*found 100; use 64 or 128"),
    ("LongVidCondition", dict(keyframe_starts="0, soon"), "not a whole frame number.*'0, 48, 96'"),
    ("LongVidCondition", dict(keyframe_starts="8, 16"), "must begin with 0"),
    ("LongVidCondition", dict(keyframe_starts="0, 16, 8"), "must increase"),
    ("LongVidDecode", dict(decode_window=8, overlap=5), r"overlap: expected at most half the decode window \(8\).*found 5; use overlap <= 4"),
    ("LongVidSaveVideo", dict(output_path="clip.avi"), "output_path: expected an .mp4 file name"),
    ("LongVidSaveVideo", dict(output_path="../clip.mp4"), r"output_path: expected a path that stays inside the output folder \('\.\.' is refused"),
    ("LongVidScheduleView", dict(window=6, chunk=4, steps=6), "multiple of chunk"),
])
def test_impossible_settings_are_refused_at_validation_saying_what_to_change(node_id, values, message):
    result = NODES[node_id].validate_inputs(**values)
    assert isinstance(result, str)
    assert re.search(message, result), result


def test_context_sigma_widget_reaches_the_progressive_sampler_and_zero_means_clean(model, context_sigmas_seen):
    cond, _ = condition(model)
    clean = sample(model, cond)["samples"]
    args = [SMALL[k] for k in ("mode", "window", "chunk", "steps", "cfg", "min_cfg", "seed")]
    noised = NODES["LongVidSample"]().sample(model, cond, 6, *args, context_sigma=0.3)[0]["samples"]
    assert context_sigmas_seen == [None, 0.3]
    assert clean.shape == noised.shape and not torch.equal(clean, noised)  # the chunk in front went in noised


def test_replacement_modes_do_not_need_the_progressive_arithmetic():
    assert NODES["LongVidSample"].validate_inputs(mode="replacement_with_noise", window=5, chunk=2, steps=7) is True
    assert NODES["LongVidSample"].validate_inputs(mode="full_sequence", window=5, chunk=2, steps=7) is True


def test_validation_runs_again_when_the_node_runs(model, monkeypatch):
    calls = count_denoiser_calls(model, monkeypatch)
    cond, _ = condition(model)
    with pytest.raises(ValueError, match="use window 4 or 6"):
        sample(model, cond, window=5)
    with pytest.raises(ValueError, match="multiple of 64"):
        NODES["LongVidCondition"]().condition(model, image(), 100, 64, "0", 6, 127, 0.02)
    assert calls == []


def test_full_sequence_of_plain_svd_is_limited_to_its_25_frames(model, monkeypatch):
    calls = count_denoiser_calls(model, monkeypatch)
    cond, _ = condition(model)
    with pytest.raises(ValueError, match=r"frames: expected at most 25 in full_sequence mode.*plain SVD was trained on "
                                         r"clips of 25 frames\), found 26; use fewer frames, or the progressive mode"):
        sample(model, cond, frames=26, mode="full_sequence")
    assert calls == []


def test_extension_table_length_limits_windows_before_any_work(folders, monkeypatch):
    extended = load(EXTENSION)
    assert extended.max_frames == EXTENSION_FRAMES and extended is not load()
    extended = load(EXTENSION)
    calls = count_denoiser_calls(extended, monkeypatch)
    cond, _ = condition(extended)
    with pytest.raises(ValueError, match=r"window: expected window \+ chunk <= 8, the frames this ExVideo "
                                         r"extension's frame-position table holds.*found 8 \+ 2 = 10; use window <= 6"):
        sample(extended, cond, frames=12, window=8, chunk=2, steps=4)
    with pytest.raises(ValueError, match=r"frames: expected at most 8 in full_sequence mode.*table holds 8 frames\), found 9"):
        sample(extended, cond, frames=9, mode="full_sequence")
    assert calls == []
    assert sample(extended, cond, frames=6, window=6, chunk=2, steps=3)["samples"].shape == (6, 4, 8, 8)


# ----------------------------------------------------------------------------------- progress, cancel


@pytest.mark.parametrize("mode, plan", [
    ("progressive", lambda n: sampling.plan_progressive(n, window=4, chunk=2, steps=2)),
    ("full_sequence", lambda n: sampling.plan_full_sequence(n, steps=2)),
    ("replacement_without_noise", lambda n: sampling.plan_replacement(n, window=6, condition_frames=2, steps=2)),
])
def test_progress_bar_counts_every_denoiser_call(model, bars, monkeypatch, mode, plan):
    calls = count_denoiser_calls(model, monkeypatch)
    cond, _ = condition(model)
    frames = 7 if mode != "full_sequence" else 5
    sample(model, cond, frames=frames, mode=mode)
    expected = plan(frames).denoiser_calls
    (bar,) = bars
    assert bar.total == expected == len(calls)
    assert [value for value, _, _ in bar.updates] == list(range(1, expected + 1))
    previews = [preview for _, _, preview in bar.updates if preview is not None]
    assert previews and all(p[0] == "JPEG" and p[1].size == (8, 8) for p in previews)


def test_cancel_stops_within_one_denoiser_call(model, bars, monkeypatch):
    calls = count_denoiser_calls(model, monkeypatch)
    cond, _ = condition(model)

    class Interrupted(Exception):
        pass

    def cancel_after_third_call():
        if len(calls) >= 3:
            raise Interrupted()

    monkeypatch.setattr(runtime, "throw_if_interrupted", cancel_after_third_call)
    with pytest.raises(Interrupted):
        sample(model, cond, frames=40)
    assert len(calls) == 3  # the call in flight finished; no fourth call started
    assert sampling.plan_progressive(40, window=4, chunk=2, steps=2).denoiser_calls > 3


def test_cancelled_streaming_run_leaves_a_playable_partial_video(model, monkeypatch, folders, tmp_path):
    calls = count_denoiser_calls(model, monkeypatch)
    cond, _ = condition(model)

    def cancel_after_ten_calls():
        if len(calls) >= 10:
            raise KeyboardInterrupt

    monkeypatch.setattr(runtime, "throw_if_interrupted", cancel_after_ten_calls)
    target = tmp_path / "video.mp4"
    with pytest.raises(KeyboardInterrupt):
        stream_to_video(model, cond, frames=40, output_path=str(target), decode_window=4, overlap=0)
    assert not target.exists()  # the target's name is for a whole video only
    frames, _ = read_video(tmp_path / "video.partial.mp4")
    # 10 calls finish 10 - (K - 1) * d = 9 chunks = 18 frames; each full window of 4 was written
    assert len(calls) == 10 and frames.shape[0] == 16


# ----------------------------------------------------------------------------------- video files


def stream_to_video(model, cond, frames, prefix=None, output_path="", decode_window=4, overlap=1, **overrides):
    args = {**SMALL, **overrides}
    return NODES["LongVidSampleToVideo"]().sample_to_video(
        model, cond, frames, args["mode"], args["window"], args["chunk"], args["steps"], args["cfg"],
        args["min_cfg"], args["seed"], "video/LongVid", 8.0, 19, decode_window, overlap, prefix=prefix,
        output_path=output_path)


def test_save_video_writes_a_readable_mp4_into_the_output_folder(model, folders):
    cond, _ = condition(model)
    latent = sample(model, cond, frames=7)
    result = NODES["LongVidSaveVideo"]().save(model, latent, "video/LongVid", 7.5, 19, 4, 2)
    path = Path(result["result"][0])
    entry = result["ui"]["images"][0]
    assert path.parent == folders["output"] / "video" and path.suffix == ".mp4"
    assert entry == {"filename": path.name, "subfolder": "video", "type": "output"}
    assert result["ui"]["animated"] == (True,)
    frames, fps = read_video(path)
    assert frames.shape == (7, 64, 64, 3) and fps == 7.5
    decoded = NODES["LongVidDecode"]().decode(model, latent, 4, 2)[0]
    assert (frames - decoded).abs().mean() < 0.05  # the same frames, through H.264
    again = Path(NODES["LongVidSaveVideo"]().save(model, latent, "video/LongVid", 7.5, 19, 4, 2)["result"][0])
    assert again != path and again.exists()  # numbered like ComfyUI's saved files


def test_sample_to_video_streams_prefix_and_new_frames_into_one_file(model, tmp_path):
    video = torch.rand(3, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    prefix, last = NODES["LongVidEncodeFrames"]().encode(model, video, 64, 64)
    cond, _ = condition(model, last)
    target = tmp_path / "streamed.mp4"
    result = stream_to_video(model, cond, frames=6, prefix=prefix, output_path=str(target))
    assert result["result"] == (str(target), "progressive: window 4, chunk 2, 2 steps") and result["ui"] == {}
    frames, fps = read_video(target)
    assert frames.shape == (9, 64, 64, 3) and fps == 8
    # the same video as sampling to LATENT and saving it
    latent = sample(model, cond, frames=6, prefix=prefix)
    saved = NODES["LongVidSaveVideo"]().save(model, latent, "video/x", 8.0, 19, 4, 1,
                                             output_path=str(tmp_path / "b.mp4"))
    # (H.264 may round the two files differently where float rounding differs by an ulp)
    assert (read_video(saved["result"][0])[0] - frames).abs().mean() < 2 / 255


# ----------------------------------------------------------------------------------- schedule view


def test_schedule_view_draws_the_table(monkeypatch):
    image_batch, text = NODES["LongVidScheduleView"]().draw(8, 2, 8, 12, False, 256)
    table = progressive_table(8, 2, 8, 12)
    layout = schedule_layout(table, 256)
    assert image_batch.shape == (1, layout.height, layout.width, 3)
    assert (layout.rows, layout.columns) == (len(table), 6)
    assert "8 frames = 4 chunks of 2" in text and f"{len(table)} denoiser calls" in text
    from longvid_core.evaluation.schedule_plot import cell_colour

    picture = image_batch[0]
    for r in range(len(table)):
        for c in range(layout.columns):
            x, y = layout.cell_centre(r, c)
            expected = torch.tensor(cell_colour(table, table[r], c))
            assert torch.allclose(picture[y, x], expected, atol=1 / 255 + 1e-6), (r, c)


# ----------------------------------------------------------------------------------- one schedule


def settings_node(mode="progressive", window=4, chunk=2, steps=2, partitions=1, lookahead=False, context_overlap=-1,
                  context_sigma=0.0, cache_interval=0):
    return NODES["LongVidSettings"]().make(mode, window, chunk, steps, partitions, lookahead, context_overlap,
                                           context_sigma, cache_interval)[0]


def test_settings_node_makes_the_pipelines_schedule():
    assert settings_node() == pipeline.Schedule("progressive", 4, 2, 2)
    # the widgets' "off" values are the pipeline's None: clean context, a quarter-window overlap
    made = settings_node("context_windows", 6, 2, 3, context_overlap=-1, context_sigma=0.0)
    assert made.context_overlap is None and made.context_sigma is None
    assert settings_node(partitions=2, lookahead=True).describe() == "progressive: window 4, chunk 2, 2 steps, 2 " \
                                                                     "partitions, lookahead"


def test_settings_node_refuses_impossible_schedules_at_validation_and_when_it_runs():
    settings = NODES["LongVidSettings"]
    assert settings.validate_inputs(mode="progressive", window=24, chunk=2, steps=24) is True
    assert "use window 4 or 6" in settings.validate_inputs(mode="progressive", window=5, chunk=2, steps=24)
    assert "a divisor of the window's 4 chunks" in settings.validate_inputs(mode="progressive", window=8, chunk=2,
                                                                           steps=8, partitions=3)
    assert "window: expected a value from 1 to 1024, found 0" in settings.validate_inputs(window=0)
    with pytest.raises(ValueError, match="use window 4 or 6"):
        settings_node(window=5)


def test_a_connected_schedule_replaces_the_samplers_widgets(model, monkeypatch):
    cond, _ = condition(model)
    by_widgets = sample(model, cond)["samples"]
    calls = count_denoiser_calls(model, monkeypatch)
    # widgets that alone are impossible (window 5, chunk 2) are unused: the schedule's layout runs
    latent, chosen = NODES["LongVidSample"]().sample(model, cond, 6, "progressive", 5, 2, 7, 1.0, 1.0, 0,
                                                     schedule=settings_node())
    assert chosen == "progressive: window 4, chunk 2, 2 steps"
    assert len(calls) == pipeline.plan_sampling(pipeline.SamplingSettings(6, "progressive", 4, 2, 2)).denoiser_calls
    assert torch.equal(latent["samples"], by_widgets)  # frames, cfg and seed still come from the sampler


def test_a_connected_schedule_is_what_validation_checks():
    impossible = dict(mode="progressive", window=5, chunk=2, steps=24, frames=6)
    for node_id in ("LongVidSample", "LongVidSampleToVideo"):
        node = NODES[node_id]
        assert "use window 4 or 6" in node.validate_inputs(**impossible)
        # at validation a link arrives as None: the widgets it replaces are not checked, the others are
        assert node.validate_inputs(**impossible, schedule=None) is True
        assert "frames: expected a value from 1 to 1000000, found 0" in node.validate_inputs(**{**impossible, "frames": 0}, schedule=None)
    assert "use window 4 or 6" in NODES["LongVidScheduleView"].validate_inputs(window=5, chunk=2, steps=24)
    assert NODES["LongVidScheduleView"].validate_inputs(window=5, chunk=2, steps=24, schedule=None) is True


def test_sample_to_video_takes_the_schedule_too(model, tmp_path):
    cond, _ = condition(model)
    result = NODES["LongVidSampleToVideo"]().sample_to_video(
        model, cond, 4, "full_sequence", 9, 9, 9, 1.0, 1.0, 0, "video/LongVid", 8.0, 19, 4, 1,
        output_path=str(tmp_path / "s.mp4"), schedule=settings_node())
    assert result["result"] == (str(tmp_path / "s.mp4"), "progressive: window 4, chunk 2, 2 steps")
    assert read_video(tmp_path / "s.mp4")[0].shape[0] == 4


def test_something_else_in_the_schedule_socket_is_refused(model):
    cond, _ = condition(model)
    with pytest.raises(ValueError, match="schedule: expected the output of LongVid Settings; found dict"):
        NODES["LongVidSample"]().sample(model, cond, 6, "progressive", 4, 2, 2, 1.0, 1.0, 0, schedule={})


def test_schedule_view_draws_the_connected_schedule_not_its_widgets():
    view = NODES["LongVidScheduleView"]()
    drawn, text = view.draw(24, 2, 24, 12, False, 256, schedule=settings_node(window=8, chunk=2, steps=8))
    expected, expected_text = view.draw(8, 2, 8, 12, False, 256)
    assert torch.equal(drawn, expected) and text == expected_text
    _, auto_text = view.draw(24, 2, 24, 12, False, 256, schedule=settings_node("auto", 8, 2, 8))
    assert "mode auto: the sampler chooses for its model" in auto_text and "replacement_with_noise" in auto_text
    _, other = view.draw(24, 2, 24, 12, False, 256, schedule=settings_node("context_windows", 8, 2, 8))
    assert "mode context_windows: the sampler does not roll" in other
    with pytest.raises(ValueError, match="draws progressive layouts.*expected a multiple of chunk"):
        view.draw(24, 2, 24, 12, False, 256, schedule=settings_node("replacement_with_noise", 5, 2, 8))


# ----------------------------------------------------------------------------------- model cache


def test_model_cache_reuses_a_model_while_inputs_are_unchanged(folders):
    first = load()
    assert load() is first
    fp16 = load(dtype="fp16")
    assert fp16 is not first and fp16.dtype == torch.float16
    assert load(dtype="fp16") is fp16
    assert len(model_cache.cached_models()) == model_cache.CACHE_SIZE == 1
    path = folders["checkpoints"] / CHECKPOINT
    stat = path.stat()
    inputs = dict(ckpt_name=CHECKPOINT, extension="none", dtype="fp16")
    before = NODES["LongVidLoadModel"].fingerprint_inputs(**inputs)
    assert NODES["LongVidLoadModel"].fingerprint_inputs(**inputs) == before
    assert NODES["LongVidLoadModel"].fingerprint_inputs(**{**inputs, "dtype": "fp32"}) != before
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the file was replaced
    assert NODES["LongVidLoadModel"].fingerprint_inputs(**inputs) != before
    assert load(dtype="fp16") is not fp16


# ----------------------------------------------------------------------------------- the command line alike


def cli_problem(folders, tmp_path, extension=None, **settings) -> str:
    """The message `longvid generate` refuses these settings with (the nodes' checkpoint, 64x64)."""
    from longvid_core.run.cli import main

    args = ["generate", "--svd", str(folders["checkpoints"] / CHECKPOINT), "--width", "64", "--height", "64",
            "--out", str(tmp_path / "refused.mp4"), "--quiet"]
    if extension:
        args += ["--extension", str(folders["extensions"] / EXTENSION)]
    for name, value in settings.items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(args) == 2
    return err.getvalue().strip()


def node_problem(model, **settings):
    cond, _ = condition(model)
    args = {**SMALL, **settings}
    with pytest.raises(ValueError) as info:
        NODES["LongVidSample"]().sample(model, cond, args.pop("frames"), *[args[k] for k in (
            "mode", "window", "chunk", "steps", "cfg", "min_cfg", "seed")], context_sigma=args.get("context_sigma", 0))
    return info.value.problem


@pytest.mark.parametrize("extension, settings", [
    (None, dict(frames=6, window=5, chunk=2, steps=4)),
    (None, dict(frames=6, window=4, chunk=2, steps=3)),
    (None, dict(frames=26, mode="full_sequence")),
    (None, dict(frames=6, mode="replacement_without_noise", context_sigma=0.3)),
    (EXTENSION, dict(frames=12, window=8, chunk=2, steps=4)),
    (EXTENSION, dict(frames=9, mode="full_sequence")),
])
def test_the_command_line_refuses_what_the_nodes_refuse_with_the_same_message(folders, tmp_path, extension,
                                                                              settings):
    model = load(extension or "none")
    from longvid_core.run.cli import error_line

    from_node = node_problem(model, **settings)
    # the same words, the node's input name as the command line's flag
    assert error_line(from_node) == cli_problem(folders, tmp_path, extension, **{"mode": SMALL["mode"], **settings})
    assert error_line(from_node).startswith(f"longvid: error: --{from_node.input.replace('_', '-')}: expected ")
    assert "use" in from_node  # says what to change


def test_extended_model_samples_with_chunk_1_and_a_single_frame(folders, tmp_path, monkeypatch):
    from longvid_core.run.cli import main

    extended = load(EXTENSION)
    calls = count_denoiser_calls(extended, monkeypatch)
    cond, _ = condition(extended)
    out = sample(extended, cond, frames=5, window=2, chunk=1, steps=2)["samples"]
    assert out.shape == (5, 4, 8, 8) and torch.isfinite(out).all()
    assert calls[0] == 1  # the first call holds one frame (sampled as that frame twice)
    assert len(calls) == sampling.plan_progressive(5, window=2, chunk=1, steps=2).denoiser_calls
    for mode in ("progressive", "full_sequence", "replacement_with_noise"):
        assert sample(extended, cond, frames=1, mode=mode)["samples"].shape == (1, 4, 8, 8)
    checkpoint, extension = folders["checkpoints"] / CHECKPOINT, folders["extensions"] / EXTENSION
    for frames, chunk, mode in ((3, 1, "progressive"), (1, 2, "full_sequence")):
        target = tmp_path / f"{mode}.mp4"
        assert main(["generate", "--svd", str(checkpoint), "--extension", str(extension), "--width", "64",
                     "--height", "64", "--frames", str(frames), "--window", "2", "--chunk", str(chunk), "--steps",
                     "2", "--mode", mode, "--out", str(target), "--quiet"]) == 0
        assert read_video(target)[0].shape == (frames, 64, 64, 3)


def test_a_one_frame_clip_on_an_extended_model_is_that_frame_twice(folders):
    svd = load(EXTENSION).svd
    x = torch.randn(1, 1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, _ = condition(load(EXTENSION))
    one = cond[0][1].to(svd.device)
    with torch.no_grad():
        single = svd.denoise(x, torch.tensor([[3.0]]), one)
        twice = svd.denoise(x.repeat(1, 2, 1, 1, 1), torch.tensor([[3.0, 3.0]]), one)
    torch.testing.assert_close(single, twice[:, :1])


def test_auto_mode_is_the_default_and_the_node_says_what_it_chose(model, monkeypatch):
    assert NODES["LongVidSample"].SPEC.input("mode").default == "auto"
    assert NODES["LongVidSampleToVideo"].SPEC.input("mode").default == "auto"
    calls = count_denoiser_calls(model, monkeypatch)
    cond, _ = condition(model)
    node = NODES["LongVidSample"]()
    latent, chosen = node.sample(model, cond, 6, "auto", 4, 2, 4, 1.0, 1.0, 0)
    assert latent["samples"].shape == (6, 4, 8, 8)
    expected = pipeline.training_free(pipeline.SamplingSettings(6, window=4, chunk=2, steps=4), pipeline.TRAINING_FREE)
    assert chosen == f"auto -> {expected.describe()} (no progressive fine-tuning recorded)"
    assert len(calls) == pipeline.plan_sampling(expected).denoiser_calls
    _, chosen = node.sample(model, cond, 6, "progressive", 4, 2, 4, 1.0, 1.0, 0, partitions=2, lookahead=True)
    assert chosen == "progressive: window 4, chunk 2, 4 steps, 2 partitions, lookahead"


def test_extension_limit_counts_frames_per_call_of_a_split_window(folders, monkeypatch):
    extended = load(EXTENSION)  # a table of 8 frames
    calls = count_denoiser_calls(extended, monkeypatch)
    cond, _ = condition(extended)
    node = NODES["LongVidSample"]()
    latent, _ = node.sample(extended, cond, 6, "progressive", 8, 2, 4, 1.0, 1.0, 0, partitions=2, lookahead=True)
    assert latent["samples"].shape == (6, 4, 8, 8) and max(calls) <= EXTENSION_FRAMES
    with pytest.raises(ValueError, match="window: expected at most 8 frames per call \\(this ExVideo extension's "
                                         "frame-position table\\), found 12 frames per call.*use a smaller window or more partitions"):
        node.sample(extended, cond, 6, "progressive", 12, 2, 6, 1.0, 1.0, 0, partitions=2, lookahead=True)


# ------------------------------------------------------------------------- ComfyUI's sandbox


@pytest.fixture
def inside_comfyui(monkeypatch, tmp_path):
    """runtime as inside ComfyUI, with a stand-in for the parts of folder_paths the checks use."""
    output = tmp_path / "comfy_output"
    output.mkdir()

    class FolderPaths:
        models_dir = str(tmp_path / "comfy_models")
        folder_names_and_paths = {}

        @staticmethod
        def get_output_directory():
            return str(output)

        @staticmethod
        def get_input_directory():
            return str(tmp_path / "comfy_input")

        @classmethod
        def add_model_folder_path(cls, kind, path):
            cls.folder_names_and_paths.setdefault(kind, ([], set()))[0].append(path)

    monkeypatch.setattr(runtime, "IN_COMFYUI", True)
    monkeypatch.setattr(runtime, "folder_paths", FolderPaths)
    return output


@pytest.mark.parametrize("path", ["/tmp/x.mp4", "../x.mp4", "videos/../../x.mp4"])
def test_inside_comfyui_absolute_and_parent_paths_are_refused(inside_comfyui, path):
    problem = NODES["LongVidSaveVideo"].validate_inputs(output_path=path)
    assert isinstance(problem, str) and "inside ComfyUI's output folder" in problem and repr(path) in problem
    with pytest.raises(ValueError, match="inside ComfyUI's output folder"):
        runtime.explicit_output_file(path)


def test_inside_comfyui_a_relative_path_lands_in_the_output_folder_with_a_preview(inside_comfyui):
    path, subfolder, filename = runtime.explicit_output_file("videos/take 1/clip.mp4")
    assert path == inside_comfyui / "videos" / "take 1" / "clip.mp4" and path.parent.is_dir()
    assert (subfolder, filename) == ("videos/take 1", "clip.mp4")
    assert runtime.explicit_output_file("clip.mp4")[1:] == ("", "clip.mp4")


def test_inside_comfyui_a_link_out_of_the_output_folder_is_refused(inside_comfyui, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (inside_comfyui / "escape").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="leads outside the output folder"):
        runtime.explicit_output_file("escape/clip.mp4")


def test_outside_comfyui_scripts_may_write_absolute_paths(tmp_path):
    assert runtime.explicit_output_file(str(tmp_path / "a.mp4")) == (tmp_path / "a.mp4", None, None)


def test_extensions_folder_is_created_at_start_up(inside_comfyui):
    runtime.register_model_folders()
    folder = Path(runtime.folder_paths.models_dir) / runtime.EXTENSIONS
    assert folder.is_dir()
    assert runtime.folder_paths.folder_names_and_paths[runtime.EXTENSIONS][0] == [str(folder)]


def test_taesd_previews_come_from_comfyuis_previewer_when_chosen(model, bars, monkeypatch):
    seen = []

    class TAESDPreviewer:  # stands in for latent_preview.TAESDPreviewerImpl
        def decode_latent_to_preview_image(self, preview_format, x0):
            seen.append(tuple(x0.shape))
            return (preview_format, "taesd picture", 512)

    monkeypatch.setattr(runtime, "taesd_previewer", lambda: TAESDPreviewer())
    cond, _ = condition(model)
    sample(model, cond, frames=7)
    previews = [preview for _, _, preview in bars[0].updates if preview is not None]
    assert previews and all(p == ("JPEG", "taesd picture", 512) for p in previews)
    assert set(seen) == {(1, 4, 8, 8)}  # the newest finished latent frame, in SVD's (SD) latent space


def test_without_comfyui_there_is_no_taesd_previewer():
    assert runtime.taesd_previewer() is None


def test_cache_interval_on_the_settings_node_runs_the_deep_cache(model, monkeypatch):
    cond, _ = condition(model)
    run = NODES["LongVidSample"]().sample
    # 8 steps over 2 chunks: the window shifts every 4 calls, so calls between shifts can reuse
    plain = run(model, cond, 6, "progressive", 4, 2, 2, 1.0, 1.0, 0, schedule=settings_node(steps=8))[0]["samples"]
    reused = []
    real = model.svd.denoise

    def recording(x, sigma, c, **options):
        reused.append("deep_features" in options)
        return real(x, sigma, c, **options)

    monkeypatch.setattr(model.svd, "denoise", recording)
    schedule = settings_node(steps=8, cache_interval=1)
    assert schedule.cache_interval == 1 and "deep cache 1" in schedule.describe()
    latent, chosen = run(model, cond, 6, "progressive", 4, 2, 2, 1.0, 1.0, 0, schedule=schedule)
    assert chosen.endswith("deep cache 1") and any(reused) and not all(reused)
    assert not torch.equal(latent["samples"], plain)  # reused calls make a (slightly) different video
    assert "expected a value from 0 to 16, found -1" in NODES["LongVidSettings"].validate_inputs(cache_interval=-1)


def test_compile_toggle_compiles_the_unet_of_its_own_cached_model(folders):
    plain = load()
    compiled = NODES["LongVidLoadModel"]().load(CHECKPOINT, "none", "auto", compile=True)[0]
    assert compiled is not plain and compiled.svd.unet.compiled_with == "inductor"
    assert getattr(plain.svd.unet, "compiled_with", None) is None


def test_start_up_copies_example_inputs_without_overwriting(inside_comfyui, tmp_path):
    assert runtime.install_example_inputs() == ["longvid_example.mp4"]
    copied = tmp_path / "comfy_input" / "longvid_example.mp4"
    assert copied.read_bytes() == (runtime.EXAMPLE_INPUTS / "longvid_example.mp4").read_bytes()
    copied.write_bytes(b"the user's own file")
    assert runtime.install_example_inputs() == [] and copied.read_bytes() == b"the user's own file"


# ----------------------------------------------------------------------------------- guides


def test_guides_chain_and_the_video_passes_through_them(model):
    from longvid_core import pipeline as run_pipeline

    cond = condition(model)[0]
    pictures = image(batch=2, height=64, width=64, seed=5)
    first = NODES["LongVidGuides"]().guides(pictures, "2, 5", 1.0)[0]
    chained = NODES["LongVidGuides"]().guides(image(height=64, width=96, seed=6), "3", 0.5, previous=first)[0]
    assert [(g.frame, g.strength) for g in chained] == [(2, 1.0), (5, 1.0), (3, 0.5)]
    latent = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), guides=chained)[0]["samples"]
    expected, _ = run_pipeline.guides_from_images(model.svd, pictures, [2, 5], [1.0, 1.0], 64, 64)
    for guide in expected:
        torch.testing.assert_close(latent[guide.frame] * VAE_SCALE, guide.latent[0], rtol=0, atol=1e-6)
    free = sample(model, cond)["samples"]
    assert not torch.equal(latent[3], free[3])  # the strength-0.5 picture pulls its frame too


@pytest.mark.parametrize("frames, strength, message", [
    ("2, x", 1.0, "frames: expected one whole frame index >= 0 per picture"),
    ("-1", 1.0, "found '-1'"),
    ("2, 2", 1.0, "a frame twice"),
    ("2", 1.5, "strength"),
])
def test_guides_node_refuses_bad_widgets_at_validation(frames, strength, message):
    problem = NODES["LongVidGuides"].validate_inputs(frames, strength)
    assert problem is not True and message in problem, problem


def test_guides_beyond_the_video_are_refused_before_sampling(model):
    cond = condition(model)[0]
    guides = NODES["LongVidGuides"]().guides(image(height=64, width=64), "9", 1.0)[0]
    with pytest.raises(ValueError, match="guide frame: expected an index within the new frames 0..5"):
        NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), guides=guides)
    with pytest.raises(ValueError, match=r"frames: expected one frame index per picture of the batch \(2\)"):
        NODES["LongVidGuides"]().guides(image(batch=2), "1", 1.0)
    with pytest.raises(ValueError, match=r"frames: expected frames the previous guides leave free"):
        NODES["LongVidGuides"]().guides(image(), "9", 1.0, previous=guides)


def test_video_guides_interpolate_and_refine_and_a_loop(model):
    from longvid_core import pipeline as run_pipeline

    video = image(batch=3, height=64, width=64, seed=7)
    guides, frames, first = NODES["LongVidVideoGuides"]().video_guides(video, 2, 1.0)
    assert frames == 5 and [g.frame for g in guides] == [0, 2, 4] and torch.equal(first, video[:1])
    cond = condition(model, first)[0]
    latent = NODES["LongVidSample"]().sample(model, cond, frames, *SMALL.values(), guides=guides)[0]["samples"]
    expected, _ = run_pipeline.guides_from_images(model.svd, video, [0, 2, 4], [1.0] * 3, 64, 64)
    for guide in expected:
        torch.testing.assert_close(latent[guide.frame] * VAE_SCALE, guide.latent[0], rtol=0, atol=1e-6)
    refine, frames, _ = NODES["LongVidVideoGuides"]().video_guides(video, 1, 0.5)
    assert frames == 3 and [(g.frame, g.strength) for g in refine] == [(0, 0.5), (1, 0.5), (2, 0.5)]
    with pytest.raises(ValueError, match="input video: expected a video of at least 2 frames, found 1"):
        NODES["LongVidVideoGuides"]().video_guides(video[:1], 2, 1.0)
    # a loop: the picture at frame 0 is held there and one frame past the end; 6 frames come out
    loop = NODES["LongVidGuides"]().guides(first, "0", 1.0, loop=True)[0]
    looped = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), guides=loop)[0]["samples"]
    assert looped.shape[0] == 6
    torch.testing.assert_close(looped[0] * VAE_SCALE, expected[0].latent[0], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match=r"loop: expected a picture at frame 0"):
        NODES["LongVidGuides"]().guides(first, "3", 1.0, loop=True)


def test_guides_method_time_reversal_reaches_the_sampler_as_anchors(model):
    cond = condition(model)[0]
    picture = image(height=64, width=64, seed=8)
    options = dict(SMALL, mode="replacement_with_noise")
    latents = {}
    for method in ("hold", "time_reversal"):
        guides = NODES["LongVidGuides"]().guides(picture, "4", 1.0, method=method)[0]
        assert guides[0].method == method
        latents[method] = NODES["LongVidSample"]().sample(model, cond, 6, *options.values(), guides=guides)[0]["samples"]
    torch.testing.assert_close(latents["time_reversal"][4], latents["hold"][4], rtol=0, atol=1e-6)  # both pass through
    assert not torch.equal(latents["time_reversal"][1:4], latents["hold"][1:4])  # the frames before it run backward too
    assert NODES["LongVidGuides"]().guides(picture, "4", 1.0)[0][0].method == "auto"
    problem = NODES["LongVidGuides"].validate_inputs("4", 1.0, "sideways")
    assert problem is not True and "method" in problem, problem


def test_sampler_name_and_scheduler_reach_the_run_from_the_sampler_or_the_settings_node(model):
    cond = condition(model)[0]
    euler = sample(model, cond)["samples"]
    named = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), sampler_name="dpmpp_2m",
                                            scheduler="align_your_steps")
    assert "dpmpp_2m sampler, align_your_steps schedule" in named[1]
    assert not torch.equal(named[0]["samples"], euler)
    schedule = NODES["LongVidSettings"]().make("progressive", 4, 2, 2, 1, False, -1, 0.0, 0, "heun", "exponential")[0]
    assert (schedule.sampler_name, schedule.scheduler) == ("heun", "exponential")
    settings = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), schedule=schedule)[1]
    assert "heun sampler, exponential schedule" in settings  # the connected schedule wins over the widgets
    for node, bad in (("LongVidSample", dict(sampler_name="dpmpp_9m")), ("LongVidSettings", dict(scheduler="x"))):
        problem = NODES[node].validate_inputs(**bad)
        assert problem is not True and next(iter(bad)) in problem, problem


def test_core_sigmas_replace_steps_and_scheduler_in_every_mode(model):
    from longvid_core.sampling.schedulers import SCHEDULERS

    cond = condition(model)[0]
    ays = SCHEDULERS["align_your_steps"](4).float()  # what core's AlignYourStepsScheduler (SVD, 4 steps) gives
    for mode in ("progressive", "replacement_with_noise", "full_sequence", "context_windows"):
        options = dict(SMALL, mode=mode, steps=24)  # steps is replaced by the custom schedule's 4
        latent, settings = NODES["LongVidSample"]().sample(model, cond, 6, *options.values(), sigmas=ays)
        assert "custom sigmas" in settings and "4 steps" in settings, settings
        scheduled = NODES["LongVidSample"]().sample(model, cond, 6, *dict(options, steps=4).values(),
                                                    scheduler="align_your_steps")[0]
        torch.testing.assert_close(latent["samples"], scheduled["samples"], rtol=0, atol=0)
    for bad, message in ((torch.tensor([700.0]), "at least 2 values"), (torch.tensor([1.0, 2.0, 0.0]), "not decreasing"),
                         (torch.tensor([700.0, 5.0]), "ending in 5")):
        with pytest.raises(ValueError, match=f"sigmas: expected .*{message}"):
            NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), sigmas=bad)


class CoreSampler:
    """What core's KSamplerSelect gives: a KSAMPLER holding k-diffusion's sample_<name> and options."""

    def __init__(self, name, **options):
        def function(*args, **kwargs):
            raise AssertionError("LongVid runs its own per-frame version")

        function.__name__ = f"sample_{name}"
        self.sampler_function, self.extra_options = function, options


def test_a_core_sampler_from_ksamplerselect_runs_as_longvids_sampler_of_that_name(model):
    cond = condition(model)[0]
    named = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), sampler_name="dpmpp_2m")[0]
    core = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), sampler=CoreSampler("dpmpp_2m"))
    assert "dpmpp_2m sampler" in core[1]
    torch.testing.assert_close(core[0]["samples"], named["samples"], rtol=0, atol=0)


@pytest.mark.parametrize("function, name", [("unipc", "uni_pc"), ("unipc_bh2", "uni_pc_bh2"), ("deis", "deis")])
def test_cores_uni_pc_and_deis_run_as_longvids_per_frame_rules_in_progressive_mode(model, function, name):
    # core's KSamplerSelect holds uni_pc.sample_unipc / sample_unipc_bh2 under those names
    cond = condition(model)[0]
    named = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), sampler_name=name)[0]
    core = NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), sampler=CoreSampler(function))
    assert f"{name} sampler" in core[1]
    torch.testing.assert_close(core[0]["samples"], named["samples"], rtol=0, atol=0)


def test_a_core_sampler_longvid_has_no_rule_for_runs_core_function_in_one_level_modes_only(model):
    from tests.test_step_rules import k_sample_euler

    cond = condition(model)[0]
    options = dict(SMALL, mode="full_sequence")
    euler = NODES["LongVidSample"]().sample(model, cond, 6, *options.values())[0]
    def sample_res_multistep(*args, **kwargs):  # stands in for core's function: the same loop as Euler
        return k_sample_euler(*args, **kwargs)

    core = CoreSampler("res_multistep")
    core.sampler_function = sample_res_multistep
    latent, settings = NODES["LongVidSample"]().sample(model, cond, 6, *options.values(), sampler=core)
    assert "core's res_multistep sampler" in settings
    torch.testing.assert_close(latent["samples"], euler["samples"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"sampler: expected a sampler LongVid runs per frame in progressive mode: "
                                         r"euler, euler_ancestral.*found core's res_multistep"):
        NODES["LongVidSample"]().sample(model, cond, 6, *SMALL.values(), sampler=core)
