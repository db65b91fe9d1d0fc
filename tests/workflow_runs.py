"""How the shipped workflows are shrunk to run in seconds, and what each must write: shared by the
real-server tests (test_comfyui_server.py) and the in-process runs of test_workflow_runs.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "example_workflows" / "api"
SHIPPED = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
TEST_IMAGE = "longvid_test.png"
INPUT_VIDEO = "input_video.mp4"  # the name the v0.1 release's extend_video.json loads
INPUT_VIDEO_FRAMES = 3
# the shipped video workflows' input, which the pack copies into the input folder at start-up
EXAMPLE_VIDEO, EXAMPLE_VIDEO_FRAMES = "longvid_example.mp4", 8
FRAMES = 6  # new frames per workflow (where the frame count is a widget, not a link)
TINY = {  # inputs overridden for speed, per class
    "LongVidCondition": {"width": 64, "height": 64},
    "LongVidEncodeFrames": {"width": 64, "height": 64},
    "LongVidSample": {"frames": FRAMES, "window": 4, "chunk": 2, "steps": 2, "cfg": 1.0, "min_cfg": 1.0},
    "LongVidSampleToVideo": {"frames": FRAMES, "window": 4, "chunk": 2, "steps": 2, "cfg": 1.0, "min_cfg": 1.0,
                             "decode_window": 4, "overlap": 1},
    "LongVidSaveVideo": {"decode_window": 4, "overlap": 1},
    "LongVidScheduleView": {"frames": FRAMES, "max_size": 128},
    "LongVidSettings": {"window": 4, "chunk": 2, "steps": 2},
    "AlignYourStepsScheduler": {"steps": 2},
}
SAMPLERS = ("LongVidSample", "LongVidSampleToVideo")


def load_api(name: str, folder: Path = WORKFLOWS) -> dict:
    return json.loads((folder / f"{name}.json").read_text())


def shrink(prompt: dict) -> dict:
    """Tiny sizes; the image model's output (VAEDecode) and every LoadImage become a LoadImage of the
    test picture; guide frames move with the frame count; nodes that no output node needs any more
    are dropped. A frame count that comes over a link (from LongVid Video Guides) stays linked."""
    prompt = copy.deepcopy(prompt)
    saved_frames = [n["inputs"]["frames"] for n in prompt.values() if n["class_type"] in SAMPLERS
                    and isinstance(n["inputs"].get("frames"), int)]
    for node in prompt.values():
        inputs = node["inputs"]
        inputs.update({k: v for k, v in TINY.get(node["class_type"], {}).items()
                       if not isinstance(inputs.get(k), list)})
        if node["class_type"] == "LongVidCondition":
            starts = inputs["keyframe_starts"].split(",")
            inputs["keyframe_starts"] = ", ".join(str(2 * i) for i in range(len(starts)))
        if node["class_type"] == "LongVidGuides" and saved_frames:  # same place in the shorter video
            scale = (FRAMES - 1) / (saved_frames[0] - 1)
            inputs["frames"] = ", ".join(str(round(int(f) * scale)) for f in inputs["frames"].split(","))
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


def expected_video(name: str, old_release: bool = False) -> tuple[int, float]:
    """Frames and frame rate of the video a shrunk workflow writes."""
    if name == "extend_video":
        return FRAMES + (INPUT_VIDEO_FRAMES if old_release else EXAMPLE_VIDEO_FRAMES), 8.0
    if name == "interpolate_x4":
        return (EXAMPLE_VIDEO_FRAMES - 1) * 4 + 1, 32.0
    if name == "refine_video":
        return EXAMPLE_VIDEO_FRAMES, 8.0
    return FRAMES, 8.0
