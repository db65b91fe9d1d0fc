"""The nodes' declarations (``SPEC``, nodes/spec.py), read without ComfyUI: what the V3 schema is built
from (nodes/comfy_v3.py; that conversion runs in tests/test_comfyui_server.py against a real server)."""

import json
from pathlib import Path

import pytest

import nodes as node_pack

NODES = node_pack.NODES
V1_SCHEMAS = json.loads((Path(__file__).resolve().parent / "data" / "node_schemas_v0_1.json").read_text())
# rarely touched inputs, folded away by newer frontends
ADVANCED = {"dtype", "context_sigma", "partitions", "lookahead", "context_overlap", "decode_window", "overlap",
            "crf", "output_path", "max_size", "cache_interval", "compile"}


@pytest.fixture(params=sorted(NODES), ids=str)
def spec(request):
    return NODES[request.param].SPEC


ADDED_NODES = {"LongVidSettings", "LongVidGuides", "LongVidVideoGuides"}  # nodes new since the V1 release


def test_every_node_of_the_v1_release_is_still_there():
    assert set(NODES) == set(V1_SCHEMAS) | ADDED_NODES


@pytest.mark.parametrize("node_id", sorted(V1_SCHEMAS))
def test_input_names_kinds_and_order_are_those_of_the_v1_release(node_id):
    """Saved UI workflows hold widget values and links by position, API prompts by name: nothing of
    the V1 release may move. Inputs added since are optional and come after; so do new outputs."""
    spec, old = NODES[node_id].SPEC, V1_SCHEMAS[node_id]
    assert [[i.name, i.kind] for i in spec.inputs if not i.optional] == old["required"]
    optional = [[i.name, i.kind] for i in spec.inputs if i.optional]
    assert optional[:len(old["optional"])] == old["optional"]
    outputs = [[o.name, o.kind] for o in spec.outputs]
    assert outputs[:len(old["outputs"])] == old["outputs"]
    assert spec.output_node == old["output_node"]


def test_what_was_added_since_the_v1_release():
    added = {node_id: ([i.name for i in plain.SPEC.inputs][len(V1_SCHEMAS[node_id]["required"])
                                                          + len(V1_SCHEMAS[node_id]["optional"]):],
                       [o.name for o in plain.SPEC.outputs][len(V1_SCHEMAS[node_id]["outputs"]):])
             for node_id, plain in NODES.items() if node_id in V1_SCHEMAS}
    assert {k: v for k, v in added.items() if v != ([], [])} == {
        "LongVidDecode": (["frame_rate"], ["video"]), "LongVidLoadModel": (["lora", "lora_strength", "compile"], []),
        "LongVidSample": (["schedule", "guides", "sampler_name", "scheduler", "sigmas", "sampler"], []),
        "LongVidSampleToVideo": (["schedule", "guides", "sampler_name", "scheduler", "sigmas", "sampler"], []),
        "LongVidScheduleView": (["schedule"], [])}


def test_required_inputs_are_declared_before_optional_ones(spec):
    # ComfyUI lists required inputs first; declaring them first keeps SPEC's order the saved order
    flags = [i.optional for i in spec.inputs]
    assert flags == sorted(flags), spec.node_id


def test_every_node_has_a_description_and_every_input_and_output_a_tooltip(spec):
    assert spec.description.strip() and spec.display_name.startswith("LongVid")
    assert [i.name for i in spec.inputs if not (i.tooltip or "").strip()] == []
    assert [o.name for o in spec.outputs if not (o.tooltip or "").strip()] == []


def test_rarely_touched_inputs_are_marked_advanced(spec):
    assert {i.name for i in spec.inputs if i.advanced} == ADVANCED & set(spec.input_names)


def test_defaults_fit_their_widgets(spec):
    for item in spec.inputs:
        if item.kind in ("INT", "FLOAT"):
            assert item.min <= item.default <= item.max, (spec.node_id, item.name)
        elif item.kind == "COMBO" and item.model_folder is None:
            assert item.default in item.choices(), (spec.node_id, item.name)
        elif not item.is_widget:
            assert item.default is None and not item.advanced, (spec.node_id, item.name)


def test_an_unknown_input_name_says_which_inputs_exist():
    with pytest.raises(KeyError, match="LongVidDecode has no input 'window'.*decode_window"):
        NODES["LongVidDecode"].SPEC.input("window")
