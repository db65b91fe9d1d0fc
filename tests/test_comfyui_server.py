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

from tests.workflow_runs import (EXAMPLE_VIDEO, FRAMES, INPUT_VIDEO, INPUT_VIDEO_FRAMES, SHIPPED,
                                 TEST_IMAGE, WORKFLOWS, expected_video, load_api, shrink)

COMFYUI = os.environ.get("COMFYUI_PATH")
pytestmark = pytest.mark.skipif(not COMFYUI or not (Path(COMFYUI) / "main.py").is_file(),
                                reason="set COMFYUI_PATH to a ComfyUI checkout to run the server tests")

REPO = Path(__file__).resolve().parents[1]
OLD_RELEASE = REPO / "tests" / "data" / "workflows_v0_1"  # workflows saved with the V1 nodes
WORKFLOW_NAMES = ["image_to_long_video", "text_to_long_video", "keyframes_to_long_video", "extend_video"]
STARTUP_SECONDS = 180
RUN_SECONDS = 300

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
    from longvid_core.run.video_io import VideoWriter
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
    from nodes import NODES

    info = request(server["url"], "/object_info")
    assert set(NODES) <= set(info)
    loader = info["LongVidLoadModel"]["input"]["required"]
    assert "svd_xt.safetensors" in loader["ckpt_name"][1]["options"]
    assert "ExVideo-SVD-128f-v1/model.fp16.safetensors" in loader["extension"][1]["options"]
    log = server["log"].read_text()
    failed = [line for line in log.splitlines()
              if ("Cannot import" in line or "IMPORT FAILED" in line) and "LongVid" in line]
    assert failed == [] and "Error while calling comfy_entrypoint" not in log


def test_server_shows_the_v3_nodes_as_declared(server):
    """/object_info is what the frontend builds nodes, widgets, tooltips and the help panel from."""
    from nodes import NODES

    info = request(server["url"], "/object_info")
    for node_id, plain in NODES.items():
        spec, shown = plain.SPEC, info[node_id]
        assert (shown["display_name"], shown["description"], shown["category"], shown["output_node"]) == (
            spec.display_name, spec.description, spec.category, spec.output_node)
        assert shown["python_module"].startswith("custom_nodes."), shown["python_module"]
        assert shown["output"] == [o.kind for o in spec.outputs]
        assert shown["output_name"] == [o.name for o in spec.outputs]
        assert shown["output_tooltips"] == [o.tooltip for o in spec.outputs]
        order = shown["input_order"]
        assert order.get("required", []) + order.get("optional", []) == spec.input_names
        for item in spec.inputs:
            section = "optional" if item.optional else "required"
            kind, options = (shown["input"][section][item.name] + [{}])[:2]
            assert kind == item.kind and options["tooltip"] == item.tooltip, (node_id, item.name)
            assert options.get("advanced", False) == item.advanced, (node_id, item.name)
            if item.kind in ("INT", "FLOAT"):
                assert (options["default"], options["min"], options["max"]) == (item.default, item.min, item.max)
            if item.kind == "COMBO":  # V3's form: "COMBO" with options (V1 sent the list itself)
                assert options.get("default") == item.default
                if item.model_folder is None:  # (file lists are the server's; checked above)
                    assert options["options"] == item.choices()


@pytest.mark.parametrize("folder, name", [(WORKFLOWS, name) for name in SHIPPED]
                         + [(OLD_RELEASE / "api", name) for name in WORKFLOW_NAMES],
                         ids=[name for name in SHIPPED] + [f"{name}-v0.1" for name in WORKFLOW_NAMES])
def test_workflow_runs_and_writes_the_video(server, folder, name):
    from longvid_core.run.video_io import read_video

    expected_frames, expected_fps = expected_video(name, old_release=folder != WORKFLOWS)
    prompt = shrink(load_api(name, folder))
    result = run_prompt(server, prompt)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    videos = [entry for output in result["outputs"].values() for entry in output.get("images", [])
              if entry["filename"].endswith(".mp4")]
    assert len(videos) == 1, result["outputs"]
    entry = videos[0]
    frames, fps = read_video(server["base"] / "output" / entry["subfolder"] / entry["filename"])
    assert frames.shape == (expected_frames, 64, 64, 3) and fps == expected_fps


def test_shipped_workflow_runs_the_shared_settings_not_the_samplers_widgets(server):
    prompt = shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text()))
    settings = next(n for n in prompt.values() if n["class_type"] == "LongVidSettings")
    settings["inputs"].update(mode="progressive", window=4, chunk=2, steps=2)
    for node in prompt.values():  # impossible alone: refused at validation if they were used
        if node["class_type"] in ("LongVidSample", "LongVidScheduleView"):
            assert node["inputs"]["schedule"][0] in prompt
            node["inputs"].update(mode="progressive", window=5, chunk=2, steps=7)
    result = run_prompt(server, prompt)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    view = next(k for k, n in prompt.items() if n["class_type"] == "LongVidScheduleView")
    preview = next(k for k, n in prompt.items() if n["class_type"] == "PreviewImage")
    assert prompt[preview]["inputs"]["images"][0] == view and result["outputs"][preview]["images"]


def without_view(prompt: dict) -> dict:
    # keep only the video branch: with no valid output left, ComfyUI answers 400
    return {k: n for k, n in prompt.items() if n["class_type"] not in ("LongVidScheduleView", "PreviewImage")}


def refused(server, prompt) -> dict:
    """POST /prompt must answer 400; its node_errors as {class_type: [(input_name, details), ...]}."""
    with pytest.raises(urllib.error.HTTPError) as error:
        request(server["url"], "/prompt", {"prompt": prompt, "client_id": "test"})
    assert error.value.code == 400
    body = json.loads(error.value.read())
    return {entry["class_type"]: [(e["extra_info"].get("input_name"), e["details"]) for e in entry["errors"]]
            for entry in body["node_errors"].values()}


def test_impossible_settings_are_refused_with_http_400(server):
    prompt = without_view(shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text())))
    settings = next(n for n in prompt.values() if n["class_type"] == "LongVidSettings")
    settings["inputs"].update(mode="progressive", window=5, chunk=2)
    errors = refused(server, prompt)
    # once, under the input ComfyUI files the node's own checks under (the message names the others)
    assert list(errors) == ["LongVidSettings"] and len(errors["LongVidSettings"]) == 1, errors
    (name, details), = errors["LongVidSettings"]
    assert name == "window" and "expected a multiple of chunk" in details and "use window 4 or 6" in details


def test_each_problem_is_reported_once_under_its_input(server):
    prompt = without_view(shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text())))
    sampler_id = next(k for k, n in prompt.items() if n["class_type"] == "LongVidSample")
    sampler, save = prompt[sampler_id]["inputs"], next(n for n in prompt.values()
                                                        if n["class_type"] == "LongVidSaveVideo")["inputs"]
    # the sampler's own widgets, as a workflow saved before LongVid Settings has them
    del sampler["schedule"]
    prompt = {k: n for k, n in prompt.items() if n["class_type"] != "LongVidSettings"}
    sampler.update(mode="progressive", window=5, chunk=2, steps=24, frames=0)
    save.update(decode_window=8, overlap=5)
    errors = refused(server, prompt)
    sample_errors = errors["LongVidSample"]
    assert [name for name, _ in sample_errors] == ["frames", "window"], sample_errors  # ComfyUI's min check, ours
    assert "use window 4 or 6" in sample_errors[1][1]
    save_errors = errors["LongVidSaveVideo"]
    assert len(save_errors) == 1 and save_errors[0][0] == "overlap" and "at most half" in save_errors[0][1]
    # a window that is fine alone but not with its chunk, and a chunk out of range: each once, where it belongs
    sampler.update(frames=6, window=4, chunk=0)
    save.update(decode_window=4, overlap=1)
    assert refused(server, prompt) == {"LongVidSample": [("chunk", "chunk")]}


def test_missing_files_unknown_modes_and_nan_are_refused_under_their_input(server):
    """ComfyUI 0.3.64 checks neither a V3 combo's value nor NaN; LongVid does, before anything runs."""
    base = without_view(shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text())))
    loader_id = next(k for k, n in base.items() if n["class_type"] == "LongVidLoadModel")
    settings_id = next(k for k, n in base.items() if n["class_type"] == "LongVidSettings")
    for node_id, change, name, words in ((loader_id, {"ckpt_name": "gone.safetensors"}, "ckpt_name", "gone"),
                                         (loader_id, {"extension": "gone.safetensors"}, "extension", "gone"),
                                         (loader_id, {"lora_strength": float("nan")}, "lora_strength", "finite"),
                                         (settings_id, {"mode": "sideways"}, "mode", "expected one of")):
        prompt = json.loads(json.dumps(base))
        prompt[node_id]["inputs"].update(change)
        errors = refused(server, prompt)
        assert list(errors) == [prompt[node_id]["class_type"]], errors
        (input_name, details), = errors[prompt[node_id]["class_type"]]
        assert input_name == name and words in details, errors


def test_core_sampler_and_sigmas_sockets_drive_longvid_sample(server):
    """Core's KSamplerSelect (SAMPLER) and KarrasScheduler (SIGMAS) wired into LongVid Sample: a
    sampler LongVid has a per-frame rule for runs in the progressive mode auto picks; one it has not
    stops before sampling with the names that work there (in-process: tests/test_nodes.py)."""
    base = without_view(shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text())))
    sampler_id = next(k for k, n in base.items() if n["class_type"] == "LongVidSample")
    base["9001"] = {"class_type": "KarrasScheduler",
                    "inputs": {"steps": 2, "sigma_max": 700.0, "sigma_min": 0.002, "rho": 7.0}}
    base[sampler_id]["inputs"]["sigmas"] = ["9001", 0]
    for name, works in (("dpmpp_2m", True), ("uni_pc", True), ("res_multistep", False)):
        prompt = json.loads(json.dumps(base))
        prompt["9000"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": name}}
        prompt[sampler_id]["inputs"]["sampler"] = ["9000", 0]
        result = run_prompt(server, prompt)
        status = json.dumps(result["status"], indent=1)
        if works:
            assert result["status"]["status_str"] == "success", status[-3000:]
        else:
            assert result["status"]["status_str"] == "error", status[-3000:]
            assert "expected a sampler LongVid runs per frame in progressive mode" in status, status[-3000:]


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


WIDGET_KINDS = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
CONTROL, UPLOAD = "<control after generate>", "<upload>"
UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload", "file_upload")
# combo boxes that list files of the user's install (the test server has none of these)
INSTALL_FILES = {("LoadImage", "image"), ("LoadVideo", "file"), ("CheckpointLoaderSimple", "ckpt_name")}


def slots(node_info: dict):
    """(link inputs [(name, type)], widget names in widgets_values order) from /object_info, V1 or V3
    style: a combo is a list of options (V1) or "COMBO" with ``options`` (V3)."""
    links, widgets, specs = [], [], {}
    for section in ("required", "optional"):
        for name in node_info["input_order"].get(section, []):
            kind, options = (node_info["input"][section][name] + [{}])[:2]
            specs[name] = (kind, options)
            if (isinstance(kind, list) or kind in WIDGET_KINDS) and not options.get("forceInput"):
                widgets.append(name)
                widgets += [CONTROL] * bool(options.get("control_after_generate"))
                widgets += [UPLOAD] * any(options.get(flag) for flag in UPLOAD_FLAGS)
            else:
                links.append((name, kind))
    return links, widgets, specs


def widget_problem(node_type, name, value, kind, options):
    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else options["options"]
        if (node_type, name) not in INSTALL_FILES and value not in choices:
            return f"{value!r} not in {choices}"
    elif kind in ("INT", "FLOAT") and not options.get("min", value) <= value <= options.get("max", value):
        return f"{value} outside {options.get('min')}..{options.get('max')}"
    return None


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_old_release_ui_workflow_fits_the_servers_node_schemas(server, name):
    """What the browser does with a saved UI file: every node type exists, every link socket is where
    the file has it, and each widget value lands on the widget it was saved from and fits it."""
    info = request(server["url"], "/object_info")
    ui = json.loads((OLD_RELEASE / f"{name}.json").read_text())
    for node in ui["nodes"]:
        where = (name, node["id"], node["type"])
        assert node["type"] in info, where
        links, widgets, specs = slots(info[node["type"]])
        saved_links = [(i["name"], i["type"]) for i in node["inputs"]]
        # sockets added since (optional, last) are not in the file; the saved ones keep their slots
        assert saved_links == links[:len(saved_links)], where
        optional = info[node["type"]]["input_order"].get("optional", [])
        assert all(name in optional for name, _ in links[len(saved_links):]), where
        outputs = info[node["type"]]["output"]
        assert [o["type"] for o in node["outputs"]] == outputs[:len(node["outputs"])], where
        # widgets added since the file was saved are optional and last: the browser gives them defaults
        saved, added = widgets[:len(node["widgets_values"])], widgets[len(node["widgets_values"]):]
        assert len(saved) == len(node["widgets_values"]), (where, widgets)
        assert all(name in info[node["type"]]["input_order"].get("optional", []) for name in added), (where, added)
        for widget, value in zip(saved, node["widgets_values"]):
            if widget not in (CONTROL, UPLOAD):
                assert widget_problem(node["type"], widget, value, *specs[widget]) is None, (where, widget)


def test_core_save_video_saves_a_longvid_video_with_its_frame_rate(server):
    """LongVid Decode's VIDEO output is core's own type: core SaveVideo (V3, video.save_to) writes it."""
    from longvid_core.run.video_io import read_video

    prompt = shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text()))
    prompt = {k: n for k, n in prompt.items() if n["class_type"] not in ("LongVidScheduleView", "PreviewImage")}
    key = {n["class_type"]: k for k, n in prompt.items()}
    prompt[key["LongVidSaveVideo"]] = {"class_type": "LongVidDecode", "inputs": {
        "model": [key["LongVidLoadModel"], 0], "samples": [key["LongVidSample"], 0], "decode_window": 4, "overlap": 1,
        "frame_rate": 7.5}}
    prompt["90"] = {"class_type": "SaveVideo", "inputs": {
        "video": [key["LongVidSaveVideo"], 1], "filename_prefix": "video/core_save", "format": "auto", "codec": "auto"}}
    result = run_prompt(server, prompt)
    assert result["status"]["status_str"] == "success", json.dumps(result["status"], indent=1)[-3000:]
    (entry,) = result["outputs"]["90"]["images"]
    assert entry["filename"].startswith("core_save") and entry["filename"].endswith(".mp4")
    frames, fps = read_video(server["base"] / "output" / entry["subfolder"] / entry["filename"])
    assert frames.shape == (FRAMES, 64, 64, 3) and fps == 7.5


def test_unchanged_loader_inputs_and_files_reuse_the_cached_model(server):
    """fingerprint_inputs (V3's IS_CHANGED) stamps the model files: an identical second prompt is
    answered from ComfyUI's cache. (A failing fingerprint would make ComfyUI re-run every time.)"""
    prompt = shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text()))
    loader = next(k for k, n in prompt.items() if n["class_type"] == "LongVidLoadModel")
    run_prompt(server, prompt)
    again = run_prompt(server, prompt)
    assert again["status"]["status_str"] == "success"
    cached = [m[1]["nodes"] for m in again["status"]["messages"] if m[0] == "execution_cached"]
    assert cached and loader in cached[0], again["status"]["messages"]


@pytest.mark.parametrize("output_path", ["/tmp/longvid_escape.mp4", "../escape.mp4"])
def test_output_paths_outside_the_output_folder_are_refused(server, output_path):
    prompt = shrink(json.loads((WORKFLOWS / "image_to_long_video.json").read_text()))
    prompt = {k: n for k, n in prompt.items() if n["class_type"] not in ("LongVidScheduleView", "PreviewImage")}
    saver = next(n for n in prompt.values() if n["class_type"] in ("LongVidSaveVideo", "LongVidSampleToVideo"))
    saver["inputs"]["output_path"] = output_path
    with pytest.raises(urllib.error.HTTPError) as error:
        request(server["url"], "/prompt", {"prompt": prompt, "client_id": "test"})
    assert error.value.code == 400
    errors = json.loads(error.value.read())["node_errors"]
    assert "expected a file inside ComfyUI's output folder" in json.dumps(errors)
    assert {e["extra_info"].get("input_name") for entry in errors.values() for e in entry["errors"]} == {"output_path"}
    assert not Path("/tmp/longvid_escape.mp4").exists()


def test_template_browser_lists_and_serves_the_workflows(server):
    listed = request(server["url"], "/api/workflow_templates")
    shipped = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    assert sorted(listed["LongVid"]) == shipped
    for name in shipped:
        served = request(server["url"], f"/api/workflow_templates/LongVid/{name}.json")
        assert served == json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
        with urllib.request.urlopen(f"{server['url']}/api/workflow_templates/LongVid/{name}.jpg", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and r.read()[:2] == b"\xff\xd8"
    # the missing-models dialog reads each loader's properties.models
    loader = next(n for n in served["nodes"] if n["type"] == "LongVidLoadModel")
    assert {m["directory"] for m in loader["properties"]["models"]} == {"checkpoints", "longvid_extensions"}


def test_start_up_copies_the_extend_workflows_video_into_the_input_folder(server):
    copied = server["base"] / "input" / EXAMPLE_VIDEO
    assert copied.read_bytes() == (REPO / "example_workflows" / "input" / EXAMPLE_VIDEO).read_bytes()
    extend = json.loads((WORKFLOWS / "extend_video.json").read_text())
    assert [n["inputs"]["file"] for n in extend.values() if n["class_type"] == "LoadVideo"] == [EXAMPLE_VIDEO]
