"""The shared workflows on a real, headless ComfyUI server (only where ``COMFYUI_PATH`` points at a
ComfyUI checkout; skipped otherwise — every node is also tested without ComfyUI in test_nodes.py).

``COMFYUI_PYTHON`` may name the interpreter that has ComfyUI's requirements (default: this one).
The server runs on 127.0.0.1 with ``--cpu`` and ``--base-directory`` in a temporary folder holding
the pack (a link to this checkout) in ``custom_nodes/``, a tiny SVD as
``models/checkpoints/svd_xt.safetensors``, a tiny ExVideo extension under the release's name in
``models/longvid_extensions/``, and the input image and video the workflows load.

Text-to-image models cannot be made tiny for ComfyUI (it recognises SD/SDXL checkpoints by their
full widths), so in the text workflows each ``VAEDecode`` (the image model's output) is replaced by
a ``LoadImage`` of a test picture and the then unused image-model nodes are dropped: every LongVid
node and every connection from the image chain onwards runs as saved. Sizes, frame counts and
steps are shrunk so that each workflow runs in seconds.
"""

import copy
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import torch

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI or not (Path(COMFYUI) / "main.py").is_file(),
                                reason="set COMFYUI_PATH to a ComfyUI checkout to run the server tests")

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows" / "api"
TEST_IMAGE = "longvid_test.png"
INPUT_VIDEO = "input_video.mp4"  # the name extend_video.json loads
INPUT_VIDEO_FRAMES = 3
STARTUP_SECONDS = 180
RUN_SECONDS = 300
FRAMES = 6  # new frames per workflow
TINY = {  # inputs overridden for speed, per class
    "LongVidCondition": {"width": 64, "height": 64},
    "LongVidEncodeFrames": {"width": 64, "height": 64},
    "LongVidSample": {"frames": FRAMES, "window": 4, "chunk": 2, "steps": 2, "cfg": 1.0, "min_cfg": 1.0},
    "LongVidSampleToVideo": {"frames": FRAMES, "window": 4, "chunk": 2, "steps": 2, "cfg": 1.0, "min_cfg": 1.0,
                             "decode_window": 4, "overlap": 1},
    "LongVidSaveVideo": {"decode_window": 4, "overlap": 1},
    "LongVidScheduleView": {"frames": FRAMES, "max_size": 128},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(base, path, payload=None, timeout=30):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body.strip() else None  # /free and /interrupt answer with an empty body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from longvid_core.video_io import VideoWriter
    from tests.test_nodes import write_tiny_checkpoint

    base = tmp_path_factory.mktemp("comfyui_base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "LongVid").symlink_to(REPO, target_is_directory=True)
    checkpoints = base / "models" / "checkpoints"
    extensions = base / "models" / "longvid_extensions"
    (extensions / "ExVideo-SVD-128f-v1").mkdir(parents=True)
    checkpoints.mkdir(parents=True)
    write_tiny_checkpoint(checkpoints, extensions)
    (base / "input").mkdir()
    from PIL import Image

    gradient = torch.linspace(0, 255, 96)[None, :, None].expand(72, 96, 3).to(torch.uint8).numpy()
    Image.fromarray(gradient).save(base / "input" / TEST_IMAGE)
    with VideoWriter(base / "input" / INPUT_VIDEO, 8) as writer:
        writer.write(torch.rand(INPUT_VIDEO_FRAMES, 72, 96, 3, generator=torch.Generator().manual_seed(0)))

    port = free_port()
    log = open(base / "server.log", "w")
    command = [os.environ.get("COMFYUI_PYTHON", sys.executable), "main.py", "--cpu", "--listen", "127.0.0.1",
               "--port", str(port), "--disable-auto-launch", "--base-directory", str(base),
               "--database-url", "sqlite:///:memory:"]
    process = subprocess.Popen(command, cwd=COMFYUI, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"ComfyUI exited with {process.returncode}:\n{(base / 'server.log').read_text()[-4000:]}")
            try:
                request(url, "/system_stats", timeout=5)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer in {STARTUP_SECONDS} s:\n"
                                f"{(base / 'server.log').read_text()[-4000:]}")
                time.sleep(1)
        yield {"url": url, "base": base, "log": base / "server.log"}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def shrink(prompt: dict) -> dict:
    """Tiny sizes; the image model's output (VAEDecode) and every LoadImage become a LoadImage of the
    test picture; nodes that no output node needs any more are dropped."""
    prompt = copy.deepcopy(prompt)
    for node in prompt.values():
        node["inputs"].update(TINY.get(node["class_type"], {}))
        if node["class_type"] == "LongVidCondition":
            starts = node["inputs"]["keyframe_starts"].split(",")
            node["inputs"]["keyframe_starts"] = ", ".join(str(2 * i) for i in range(len(starts)))
        if node["class_type"] in ("VAEDecode", "LoadImage"):
            node["class_type"], node["inputs"] = "LoadImage", {"image": TEST_IMAGE}
    outputs = [k for k, n in prompt.items() if n["class_type"] in
               {"LongVidSaveVideo", "LongVidSampleToVideo", "PreviewImage", "SaveImage"}]
    needed, todo = set(), list(outputs)
    while todo:
        key = todo.pop()
        if key not in needed:
            needed.add(key)
            todo += [v[0] for v in prompt[key]["inputs"].values() if isinstance(v, list)]
    return {k: v for k, v in prompt.items() if k in needed}


def run_prompt(server, prompt):
    answer = request(server["url"], "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert answer["node_errors"] == {}, answer  # ComfyUI would silently skip outputs that fail validation
    prompt_id = answer["prompt_id"]
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline:
        history = request(server["url"], f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            return history[prompt_id]
        time.sleep(0.5)
    pytest.fail(f"prompt {prompt_id} did not finish in {RUN_SECONDS} s:\n{server['log'].read_text()[-4000:]}")


def test_server_lists_our_nodes_and_model_files(server):
    from nodes import NODE_CLASS_MAPPINGS

    info = request(server["url"], "/object_info")
    assert set(NODE_CLASS_MAPPINGS) <= set(info)
    loader = info["LongVidLoadModel"]["input"]["required"]
    assert "svd_xt.safetensors" in loader["ckpt_name"][0]
    assert "ExVideo-SVD-128f-v1/model.fp16.safetensors" in loader["extension"][0]
    failed = [line for line in server["log"].read_text().splitlines()
              if ("Cannot import" in line or "IMPORT FAILED" in line) and "LongVid" in line]
    assert failed == []


@pytest.mark.parametrize("name, expected_frames", [
    ("image_to_long_video", FRAMES),
    ("text_to_long_video", FRAMES),
    ("keyframes_to_long_video", FRAMES),
    ("extend_video", INPUT_VIDEO_FRAMES + FRAMES),
])
def test_workflow_runs_and_writes_the_video(server, name, expected_frames):
    from longvid_core.video_io import read_video

    prompt = shrink(json.loads((WORKFLOWS / f"{name}.json").read_text()))
    result = run_prompt(server, prompt)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    videos = [entry for output in result["outputs"].values() for entry in output.get("images", [])
              if entry["filename"].endswith(".mp4")]
    assert len(videos) == 1, result["outputs"]
    entry = videos[0]
    frames, fps = read_video(server["base"] / "output" / entry["subfolder"] / entry["filename"])
    assert frames.shape == (expected_frames, 64, 64, 3) and fps == 8


def test_impossible_settings_are_refused_with_http_400(server):
    prompt = shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text()))
    # keep only the video branch: with no valid output left, ComfyUI answers 400
    prompt = {k: n for k, n in prompt.items() if n["class_type"] not in ("LongVidScheduleView", "PreviewImage")}
    sampler = next(n for n in prompt.values() if n["class_type"] == "LongVidSample")
    sampler["inputs"].update(mode="progressive", window=5, chunk=2)
    with pytest.raises(urllib.error.HTTPError) as error:
        request(server["url"], "/prompt", {"prompt": prompt, "client_id": "test"})
    assert error.value.code == 400
    body = json.loads(error.value.read())
    messages = json.dumps(body["node_errors"])
    assert "must be a multiple of chunk" in messages and "use window 4 or 6" in messages


def test_free_memory_then_run_again(server):
    """POST /free unloads our weights through ComfyUI's memory manager; the next run loads them again."""
    request(server["url"], "/free", {"unload_models": True, "free_memory": True})
    result = run_prompt(server, shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text())))
    assert result["status"]["status_str"] == "success"


def test_interrupt_stops_a_long_run_within_a_denoiser_call(server):
    prompt = shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text()))
    sampler = next(n for n in prompt.values() if n["class_type"] == "LongVidSample")
    sampler["inputs"].update(frames=5000, seed=1)  # thousands of calls: minutes unless cancelled
    answer = request(server["url"], "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    deadline = time.monotonic() + RUN_SECONDS
    while not request(server["url"], "/queue")["queue_running"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(3)  # well into sampling
    request(server["url"], "/interrupt", {})
    interrupted_at = time.monotonic()
    while True:
        history = request(server["url"], f"/history/{answer['prompt_id']}")
        if answer["prompt_id"] in history:
            break
        assert time.monotonic() - interrupted_at < 30, "the run did not stop after /interrupt"
        time.sleep(0.2)
    status = history[answer["prompt_id"]]["status"]
    assert status["status_str"] == "error"
    assert any(message[0] == "execution_interrupted" for message in status["messages"])


@pytest.mark.parametrize("output_path", ["/tmp/longvid_escape.mp4", "../escape.mp4"])
def test_output_paths_outside_the_output_folder_are_refused(server, output_path):
    prompt = shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text()))
    prompt = {k: n for k, n in prompt.items() if n["class_type"] not in ("LongVidScheduleView", "PreviewImage")}
    saver = next(n for n in prompt.values() if n["class_type"] in ("LongVidSaveVideo", "LongVidSampleToVideo"))
    saver["inputs"]["output_path"] = output_path
    with pytest.raises(urllib.error.HTTPError) as error:
        request(server["url"], "/prompt", {"prompt": prompt, "client_id": "test"})
    assert error.value.code == 400
    assert "must be a file inside ComfyUI's output folder" in json.dumps(json.loads(error.value.read())["node_errors"])
    assert not Path("/tmp/longvid_escape.mp4").exists()
