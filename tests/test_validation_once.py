"""ComfyUI files a failing validate_inputs under every input its signature names, so each V3 node names
only ``SPEC.report_under`` and reads its other inputs from the prompt (nodes/comfy_v3.py). These parts
need no ComfyUI; tests/test_comfyui_server.py checks the server's answer."""

import inspect

import pytest

from nodes import NODES
from nodes.validation import prompt_entry_inputs, validation_values

CHECKED = sorted(node_id for node_id, cls in NODES.items() if hasattr(cls, "validate_inputs"))


@pytest.mark.parametrize("node_id", CHECKED)
def test_problems_are_reported_under_a_required_widget_the_check_reads(node_id):
    cls = NODES[node_id]
    anchor = cls.SPEC.input(cls.SPEC.report_under)
    # a required widget is in every prompt (an optional one may be missing: ComfyUI then drops the message)
    assert anchor.is_widget and not anchor.optional
    assert anchor.name in inspect.signature(cls.validate_inputs).parameters


PROMPT = {"4": {"class_type": "LongVidSample", "inputs": {
    "frames": 0, "mode": "progressive", "window": 5, "chunk": 2, "steps": 24, "cfg": 2.5, "min_cfg": 1.0, "seed": 0,
    "model": ["1", 0], "cond": ["3", 0], "context_sigma": 0.0, "partitions": 1, "lookahead": False,
    "context_overlap": -1}}}


def test_the_other_inputs_come_from_this_nodes_prompt_entry():
    entry = prompt_entry_inputs(PROMPT, "4", "LongVidSample", {"window": 5})
    assert entry is PROMPT["4"]["inputs"]
    # another node, another class, or another value of the named input: not this node's prompt
    assert prompt_entry_inputs(PROMPT, "5", "LongVidSample", {"window": 5}) is None
    assert prompt_entry_inputs(PROMPT, "4", "LongVidSampleToVideo", {"window": 5}) is None
    assert prompt_entry_inputs(PROMPT, "4", "LongVidSample", {"window": 6}) is None
    assert prompt_entry_inputs({}, "4", "LongVidSample", {"window": 5}) is None


def test_cross_checks_see_all_values_but_not_those_comfyui_already_refused():
    sample = NODES["LongVidSample"]
    values = validation_values(sample, {"window": 5}, PROMPT["4"]["inputs"])
    # frames 0 is below its minimum: ComfyUI says so under frames; sockets are not validate_inputs' business
    assert "frames" not in values and "model" not in values
    assert values["chunk"] == 2 and values["steps"] == 24 and values["window"] == 5
    assert "use window 4 or 6" in sample.validate_inputs(**values)
    # a value ComfyUI could not convert to its widget's type: ComfyUI says so, the cross checks skip it
    assert "steps" not in validation_values(sample, {"window": 5}, {**PROMPT["4"]["inputs"], "steps": "many"})
    # a linked widget or a connected schedule arrives as None: known when the node runs
    linked = {**PROMPT["4"]["inputs"], "chunk": ["9", 0], "schedule": ["8", 0]}
    values = validation_values(sample, {"window": 5}, linked)
    assert values["chunk"] is None and values["schedule"] is None
    assert sample.validate_inputs(**values) is True


def test_without_the_prompt_only_the_named_input_is_checked():
    sample = NODES["LongVidSample"]
    assert validation_values(sample, {"window": 5}, None) == {"window": 5}
    assert sample.validate_inputs(window=5) is True  # the node checks everything again when it runs
    assert "window: expected a value from 1 to 1024, found 0" in sample.validate_inputs(window=0)  # ComfyUI skips a named input's range
