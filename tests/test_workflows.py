"""Every shared workflow, and every workflow shipped with the V1 nodes (tests/data/workflows_v0_1):
known node types, consistent links, valid widget values, UI == API copy.

Core node schemas below were read from ComfyUI 0.3.64 (``nodes.py``; ``comfy_extras/nodes_video.py``
for LoadVideo and GetVideoComponents): link inputs in slot order, widget names in
``widgets_values`` order, outputs in slot order. ``CONTROL`` is the seed widget's extra "control
after generate" value, ``UPLOAD`` the upload button's value of LoadImage/LoadVideo; neither is in
the API format.
"""

import inspect
import json
import sys
from pathlib import Path

import pytest

import nodes as node_pack
from nodes.loader import NO_EXTENSION

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import workflow_assets  # noqa: E402

WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows"
OLD_RELEASE = Path(__file__).resolve().parent / "data" / "workflows_v0_1"
UI_FILES = sorted(WORKFLOWS.glob("*.json"))
OURS = node_pack.NODES
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
CONTROL, UPLOAD = "<control after generate>", "<upload>"
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}

CORE_NODES = {
    # type: (link inputs [(name, type)], widgets [name], outputs [(name, type)])
    "CheckpointLoaderSimple": ([], ["ckpt_name"], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], ["text"], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([], ["width", "height", "batch_size"], [("LATENT", "LATENT")]),
    "KSampler": ([("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                  ("latent_image", "LATENT")],
                 ["seed", CONTROL, "steps", "cfg", "sampler_name", "scheduler", "denoise"], [("LATENT", "LATENT")]),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [], [("IMAGE", "IMAGE")]),
    "LoadImage": ([], ["image", UPLOAD], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "ImageBatch": ([("image1", "IMAGE"), ("image2", "IMAGE")], [], [("IMAGE", "IMAGE")]),
    "PreviewImage": ([("images", "IMAGE")], [], []),
    "LoadVideo": ([], ["file", UPLOAD], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": ([("video", "VIDEO")], [], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    # comfy_extras/nodes_align_your_steps.py
    "AlignYourStepsScheduler": ([], ["model_type", "steps", "denoise"], [("SIGMAS", "SIGMAS")]),
}
# Standard file names the workflows refer to (our loader's combo boxes list whatever is installed).
STANDARD_FILES = {"ckpt_name": {"svd_xt.safetensors"},
                  "extension": {NO_EXTENSION, "ExVideo-SVD-128f-v1/model.fp16.safetensors"}}


def our_schema(node_type):
    """(link inputs, widget names in widgets_values order, outputs) from the node's SPEC."""
    spec = OURS[node_type].SPEC
    links, widgets = [], []
    for item in spec.inputs:
        if item.is_widget:
            widgets.append(item.name)
            if item.control_after_generate:
                widgets.append(CONTROL)
        else:
            links.append((item.name, item.kind))
    return links, widgets, [(o.name, o.kind) for o in spec.outputs]


def schema(node_type):
    return CORE_NODES[node_type] if node_type in CORE_NODES else our_schema(node_type)


def required_links(node_type):
    if node_type in CORE_NODES:
        return {name for name, _ in CORE_NODES[node_type][0]}
    spec = OURS[node_type].SPEC
    return {name for name, _ in our_schema(node_type)[0] if not spec.input(name).optional}


def load(path):
    return json.loads(path.read_text())


@pytest.fixture(params=UI_FILES + sorted(OLD_RELEASE.glob("*.json")),
                ids=lambda p: p.stem + ("" if p.parent == WORKFLOWS else "-v0.1"))
def workflow(request):
    path = request.param
    return path.stem, load(path), load(path.parent / "api" / f"{path.stem}.json")


def test_the_shared_workflows_exist_with_api_copies():
    assert {p.stem for p in UI_FILES} == {"text_to_long_video", "image_to_long_video", "extend_video",
                                          "keyframes_to_long_video", "first_last_frame", "storyboard_to_long_video",
                                          "interpolate_x4", "seamless_loop", "refine_video"}
    assert {p.stem for p in (WORKFLOWS / "api").glob("*.json")} == {p.stem for p in UI_FILES}


def test_node_types_are_ours_or_known_core_nodes(workflow):
    _, ui, api = workflow
    for node in ui["nodes"]:
        assert node["type"] in OURS or node["type"] in CORE_NODES, node["type"]
    assert any(node["type"] in OURS for node in ui["nodes"])


def test_links_are_consistent_with_slots_and_types(workflow):
    name, ui, _ = workflow
    nodes = {node["id"]: node for node in ui["nodes"]}
    assert len(nodes) == len(ui["nodes"]) and ui["last_node_id"] >= max(nodes)
    link_ids = [link[0] for link in ui["links"]]
    assert len(set(link_ids)) == len(link_ids) and ui["last_link_id"] >= max(link_ids)
    for link_id, src, src_slot, dst, dst_slot, link_type in ui["links"]:
        src_out = nodes[src]["outputs"][src_slot]
        dst_in = nodes[dst]["inputs"][dst_slot]
        assert link_id in (src_out["links"] or []) and dst_in["link"] == link_id, (name, link_id)
        assert src_out["type"] == dst_in["type"] == link_type, (name, link_id)
        assert schema(nodes[src]["type"])[2][src_slot][1] == link_type
        if "widget" in dst_in:  # a widget turned into an input: fed by an output of the widget's type
            assert dst_in["widget"]["name"] == dst_in["name"]
            assert OURS[nodes[dst]["type"]].SPEC.input(dst_in["name"]).kind == link_type, (name, link_id)
        else:
            assert schema(nodes[dst]["type"])[0][dst_slot] == (dst_in["name"], link_type)
    for node in ui["nodes"]:
        links, _, outputs = schema(node["type"])
        saved = [(i["name"], i["type"]) for i in node["inputs"] if "widget" not in i]
        # the frontend lists widget inputs after the sockets
        assert all("widget" in i for i in node["inputs"][len(saved):]), (name, node["id"])
        assert saved == links[:len(saved)], (name, node["id"])
        # a file saved before an optional socket was added lacks it; ComfyUI adds it when loading
        assert all(OURS[node["type"]].SPEC.input(n).optional for n, _ in links[len(saved):]), (name, node["id"])
        assert [o["type"] for o in node["outputs"]] == [t for _, t in outputs], (name, node["id"])
        for slot, out in enumerate(node["outputs"]):
            for link_id in out["links"] or []:
                assert ui["links"][link_ids.index(link_id)][1:3] == [node["id"], slot]
        connected = {i["name"] for i in node["inputs"] if i["link"] is not None}
        assert required_links(node["type"]) <= connected, (name, node["id"], "unconnected required input")


def test_our_widget_values_fit_our_schemas(workflow):
    name, ui, _ = workflow
    for node in ui["nodes"]:
        _, widgets, _ = schema(node["type"])
        saved = len(node["widgets_values"])
        if node["type"] in OURS and saved < len(widgets):  # a file saved before optional widgets were added
            assert all(OURS[node["type"]].SPEC.input(w).optional for w in widgets[saved:]), (name, node["id"])
            widgets = widgets[:saved]
        assert saved == len(widgets), (name, node["id"], widgets)
        if node["type"] not in OURS:
            continue
        cls = OURS[node["type"]]
        values = {}
        for widget, value in zip(widgets, node["widgets_values"]):
            if widget == CONTROL:
                assert value in CONTROL_VALUES
                continue
            spec = cls.SPEC.input(widget)
            low = value if spec.min is None else spec.min
            high = value if spec.max is None else spec.max
            if widget in STANDARD_FILES:
                assert value in STANDARD_FILES[widget], (name, widget, value)
            elif spec.kind == "COMBO":
                assert value in spec.choices(), (name, widget, value)
            elif spec.kind == "INT":
                assert isinstance(value, int) and low <= value <= high
            elif spec.kind == "FLOAT":
                assert isinstance(value, (int, float)) and low <= value <= high
            elif spec.kind == "STRING":
                assert isinstance(value, str)
            elif spec.kind == "BOOLEAN":
                assert isinstance(value, bool)
            if widget not in STANDARD_FILES:  # the loader's combos list the files installed here: none
                values[widget] = value
        if hasattr(cls, "validate_inputs"):
            named = set(inspect.signature(cls.validate_inputs).parameters)
            assert cls.validate_inputs(**{k: v for k, v in values.items() if k in named}) is True, (name, node["id"])


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_shipped_workflows_carry_every_widget_of_the_current_schemas(path):
    # a node that gains an input fails here until the shipped workflows are saved again with its value
    for node in load(path)["nodes"]:
        if node["type"] in OURS:
            _, widgets, _ = our_schema(node["type"])
            assert len(node["widgets_values"]) == len(widgets), (path.stem, node["type"], widgets)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_sampler_and_schedule_view_share_one_settings_node(path):
    api = load(path.parent / "api" / path.name)
    settings = [k for k, n in api.items() if n["class_type"] == "LongVidSettings"]
    users = [n for n in api.values() if n["class_type"] in ("LongVidSample", "LongVidSampleToVideo",
                                                             "LongVidScheduleView")]
    assert len(settings) == 1 and users
    assert all(n["inputs"].get("schedule") == [settings[0], 0] for n in users)
    frames = {json.dumps(n["inputs"]["frames"]) for n in users}  # a number, or a link
    assert len(frames) == 1  # the view draws as many frames as the sampler makes


def test_ui_file_matches_its_api_copy(workflow):
    name, ui, api = workflow
    assert set(api) == {str(node["id"]) for node in ui["nodes"]}
    links = {link[0]: link for link in ui["links"]}
    for node in ui["nodes"]:
        entry = api[str(node["id"])]
        assert entry["class_type"] == node["type"]
        link_inputs, widgets, _ = schema(node["type"])
        expected = {}
        for widget, value in zip(widgets, node["widgets_values"]):
            if widget not in (CONTROL, UPLOAD):
                expected[widget] = value
        for slot, socket in enumerate(node["inputs"]):
            if socket["link"] is not None:
                _, src, src_slot, _, dst_slot, _ = links[socket["link"]]
                assert dst_slot == slot
                expected[socket["name"]] = [str(src), src_slot]
        assert entry["inputs"] == expected, (name, node["id"])


def test_workflows_use_the_standard_file_names(workflow):
    _, _, api = workflow
    loaders = [n["inputs"] for n in api.values() if n["class_type"] == "LongVidLoadModel"]
    assert loaders and all(n["ckpt_name"] == "svd_xt.safetensors" for n in loaders)
    assert all(n["extension"] == "ExVideo-SVD-128f-v1/model.fp16.safetensors" for n in loaders)


def test_text_workflows_make_first_frames_with_core_image_model_nodes():
    for name in ("text_to_long_video", "keyframes_to_long_video"):
        api = load(WORKFLOWS / "api" / f"{name}.json")
        types = [n["class_type"] for n in api.values()]
        for core in ("CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode"):
            assert core in types, (name, core)
    keyframes = load(WORKFLOWS / "api" / "keyframes_to_long_video.json")
    (condition,) = [n for n in keyframes.values() if n["class_type"] == "LongVidCondition"]
    starts = [int(s) for s in condition["inputs"]["keyframe_starts"].split(",")]
    decoders = sum(n["class_type"] == "VAEDecode" for n in keyframes.values())
    assert len(starts) == decoders == 3  # one start per keyframe image in the batch


def test_template_assets_are_up_to_date():
    # model links (ComfyUI's missing-models dialog) and a thumbnail per workflow (template browser)
    assert workflow_assets.main(["--check"]) == 0


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_every_model_file_a_workflow_names_has_a_download_link(path):
    from PIL import Image

    ui = load(path)
    for node in ui["nodes"]:
        named = [node["widgets_values"][i] for i in workflow_assets.MODEL_WIDGETS.get(node["type"], ())]
        links = node.get("properties", {}).get("models", [])
        assert [link["name"] for link in links] == named, (path.stem, node["id"])
        for link in links:
            assert link["url"].startswith("https://huggingface.co/") and link["url"].endswith(link["name"].split("/")[-1])
            assert link["directory"] in ("checkpoints", "longvid_extensions")
    with Image.open(path.with_suffix(".jpg")) as thumbnail:
        assert thumbnail.format == "JPEG" and thumbnail.size == workflow_assets.THUMBNAIL_SIZE


def test_guide_templates_hold_what_their_names_promise():
    def api(name):
        return load(WORKFLOWS / "api" / f"{name}.json")

    def one(prompt, class_type):
        (node,) = [n["inputs"] for n in prompt.values() if n["class_type"] == class_type]
        return node

    # first and last frame: a picture at the sampler's last frame
    first_last = api("first_last_frame")
    frames = one(first_last, "LongVidSampleToVideo")["frames"]
    assert [int(f) for f in one(first_last, "LongVidGuides")["frames"].split(",")] == [frames - 1]
    # a storyboard: three text-to-image pictures, batched, at 0, between and the last frame
    storyboard = api("storyboard_to_long_video")
    frames = one(storyboard, "LongVidSampleToVideo")["frames"]
    starts = [int(f) for f in one(storyboard, "LongVidGuides")["frames"].split(",")]
    assert sum(n["class_type"] == "VAEDecode" for n in storyboard.values()) == len(starts) == 3
    assert starts[0] == 0 and starts[-1] == frames - 1
    # interpolate x4 and refine: the video guides give the sampler its frame count and first frame
    for name, factor, strength in (("interpolate_x4", 4, 1.0), ("refine_video", 1, 0.5)):
        prompt = api(name)
        key = next(k for k, n in prompt.items() if n["class_type"] == "LongVidVideoGuides")
        assert (prompt[key]["inputs"]["factor"], prompt[key]["inputs"]["strength"]) == (factor, strength)
        sampler = one(prompt, "LongVidSampleToVideo")
        assert sampler["frames"] == [key, 1] and sampler["guides"] == [key, 0]
        assert one(prompt, "LongVidCondition")["image"] == [key, 2]
    assert one(api("interpolate_x4"), "LongVidSampleToVideo")["frame_rate"] == 4 * 8.0  # the example video's 8 fps
    # a loop: the conditioning picture is the picture looped back to, at frame 0
    loop = api("seamless_loop")
    guides = one(loop, "LongVidGuides")
    assert guides["loop"] is True and guides["frames"] == "0"
    assert guides["images"] == one(loop, "LongVidCondition")["image"]


def test_a_shipped_workflow_samples_on_cores_align_your_steps_schedule():
    api = load(WORKFLOWS / "api" / "first_last_frame.json")
    (key,) = [k for k, n in api.items() if n["class_type"] == "AlignYourStepsScheduler"]
    assert api[key]["inputs"] == {"model_type": "SVD", "steps": 12, "denoise": 1.0}
    (sampler,) = [n for n in api.values() if n["class_type"] == "LongVidSampleToVideo"]
    assert sampler["inputs"]["sigmas"] == [key, 0]
