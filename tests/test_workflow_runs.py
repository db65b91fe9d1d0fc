"""Every shipped workflow run in this process, node by node as ComfyUI's executor would: our nodes
for real on a tiny model, the few core nodes the graphs use by small stand-ins (a picture for
LoadImage and the image model's VAEDecode, the example video for LoadVideo). The same graphs run in
a real ComfyUI server in test_comfyui_server.py where COMFYUI_PATH is set; this is what runs
everywhere."""

from __future__ import annotations

import pytest
import torch

from longvid_core.run.video_io import read_video
from longvid_core.sampling.schedulers import SCHEDULERS
from nodes import NODES
from tests.test_nodes import folders  # noqa: F401  (the tiny model files, as a fixture)
from tests.workflow_runs import EXAMPLE_VIDEO, REPO, SHIPPED, expected_video, load_api, shrink

PICTURE = torch.linspace(0, 1, 96)[None, None, :, None].expand(1, 72, 96, 3).contiguous()


def core_node(class_type: str, inputs: dict):
    """Stand-ins for the core nodes the shrunk workflows still hold."""
    if class_type == "LoadImage":
        return PICTURE, torch.zeros(1, 72, 96)
    if class_type == "LoadVideo":
        return (REPO / "example_workflows" / "input" / inputs["file"],)
    if class_type == "GetVideoComponents":
        frames, fps = read_video(inputs["video"])
        return frames, None, fps
    if class_type == "ImageBatch":
        return (torch.cat([inputs["image1"], inputs["image2"]]),)
    if class_type == "PreviewImage":
        return ()
    if class_type == "AlignYourStepsScheduler":  # core's SVD list, resampled as core does (test_schedulers.py)
        assert (inputs["model_type"], inputs["denoise"]) == ("SVD", 1.0)
        return (SCHEDULERS["align_your_steps"](inputs["steps"]).float(),)
    raise AssertionError(f"no stand-in for core node {class_type}")


def execute(prompt: dict) -> dict:
    """Run every node of an API-format ``prompt`` once, inputs first; returns each node's outputs."""
    done: dict[str, tuple] = {}

    def run(key: str) -> tuple:
        if key not in done:
            node = prompt[key]
            inputs = {name: run(value[0])[value[1]] if isinstance(value, list) else value
                      for name, value in node["inputs"].items()}
            if node["class_type"] in NODES:
                cls = NODES[node["class_type"]]
                result = getattr(cls(), cls.SPEC.function)(**inputs)
                done[key] = result["result"] if isinstance(result, dict) else result  # {"ui", "result"}: outputs
            else:
                done[key] = core_node(node["class_type"], inputs)
        return done[key]

    for key in prompt:
        run(key)
    return done


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_runs_in_process_and_writes_its_video(folders, name):  # noqa: F811
    prompt = shrink(load_api(name))
    if name == "extend_video":
        assert (REPO / "example_workflows" / "input" / EXAMPLE_VIDEO).is_file()
    outputs = execute(prompt)
    (writer,) = [k for k, n in prompt.items() if n["class_type"] in ("LongVidSampleToVideo", "LongVidSaveVideo")]
    frames, fps = read_video(outputs[writer][0])
    assert (frames.shape[0], fps) == expected_video(name)
    assert frames.shape[1:] == (64, 64, 3)
