"""The nodes as ComfyUI V3 nodes (``io.ComfyNode``), built from their declarations (``SPEC``).

Pinned to the versioned API module ``comfy_api.v0_0_2`` rather than ``comfy_api.latest``, which
ComfyUI changes freely. Imported only inside ComfyUI (by the pack's ``comfy_entrypoint``).
Each V3 node forwards to its plain class: ``execute`` runs ``SPEC.function`` with the inputs by
name, ``validate_inputs`` / ``fingerprint_inputs`` are the plain class's own functions.
"""

from __future__ import annotations

from functools import lru_cache

from comfy_api.v0_0_2 import ComfyExtension, InputImpl, Types, io

from . import NODES
from .spec import Input, NodeSpec
from .validation import PlacedValidation
from .video import VideoFrames

CORE_TYPES = {"INT": io.Int, "FLOAT": io.Float, "STRING": io.String, "BOOLEAN": io.Boolean, "COMBO": io.Combo,
              "IMAGE": io.Image, "LATENT": io.Latent, "VIDEO": io.Video}


@lru_cache(maxsize=None)
def comfy_type(kind: str):
    """ComfyUI's type for a kind; the pack's own socket types (LONGVID_MODEL, ...) become io.Custom."""
    return CORE_TYPES.get(kind) or io.Custom(kind)


def schema_input(spec: Input) -> io.Input:
    common = {"optional": spec.optional, "tooltip": spec.tooltip}
    numbers = {"default": spec.default, "min": spec.min, "max": spec.max, "step": spec.step}
    if spec.kind == "INT":
        made = io.Int.Input(spec.name, **common, **numbers, control_after_generate=spec.control_after_generate or None)
    elif spec.kind == "FLOAT":
        made = io.Float.Input(spec.name, **common, **numbers, round=spec.round)
    elif spec.kind == "STRING":
        made = io.String.Input(spec.name, **common, default=spec.default)
    elif spec.kind == "BOOLEAN":
        made = io.Boolean.Input(spec.name, **common, default=spec.default)
    elif spec.kind == "COMBO":
        made = io.Combo.Input(spec.name, options=spec.choices(), **common, default=spec.default)
    else:
        made = comfy_type(spec.kind).Input(spec.name, **common)
    if spec.advanced:
        # 0.3.64's typed inputs take no `advanced`; extra_dict entries reach /object_info unchanged
        made.extra_dict["advanced"] = True
    return made


def schema(spec: NodeSpec) -> io.Schema:
    return io.Schema(
        node_id=spec.node_id, display_name=spec.display_name, category=spec.category, description=spec.description,
        inputs=[schema_input(i) for i in spec.inputs],
        outputs=[comfy_type(o.kind).Output(id=o.name, display_name=o.name, tooltip=o.tooltip) for o in spec.outputs],
        is_output_node=spec.output_node,
        # which node is being validated, to read its other inputs from the prompt (validate_inputs below)
        hidden=[io.Hidden.unique_id] if spec.report_under else None,
    )


def core_value(value):
    """A plain class's output value as ComfyUI's own type where they differ (VIDEO)."""
    if isinstance(value, VideoFrames):
        return InputImpl.VideoFromComponents(Types.VideoComponents(images=value.images, frame_rate=value.frame_rate))
    return value


def node_output(result) -> io.NodeOutput:
    """A plain class's return value (a tuple, or {"ui": ..., "result": tuple}) as V3's NodeOutput."""
    ui = None
    if isinstance(result, dict):
        result, ui = result["result"], result.get("ui") or None
    return io.NodeOutput(*(core_value(v) for v in result), ui=ui)


# The prompt of the latest POST /prompt, recorded just before ComfyUI validates it. ComfyUI 0.3.64 passes a
# validate_inputs only the inputs its signature names, and files a failure under each of them; the hidden
# prompt input is empty during validation. So each node's validate_inputs names one input and reads the rest here.
RECORDED = {"prompt": {}}


def record_prompt(json_data: dict) -> dict:
    RECORDED["prompt"] = json_data.get("prompt") if isinstance(json_data, dict) else {}
    return json_data


def listen_for_prompts() -> None:
    try:
        from server import PromptServer
    except ImportError:  # ComfyUI's modules without its server (scripts): inputs not named are checked at run time
        return
    handlers = PromptServer.instance.on_prompt_handlers
    if record_prompt not in handlers:
        PromptServer.instance.add_on_prompt_handler(record_prompt)


def one_place_validation(plain: type, spec: NodeSpec):
    return classmethod(PlacedValidation(plain, spec, lambda: RECORDED["prompt"]))


def v3_node(plain: type) -> type[io.ComfyNode]:
    spec: NodeSpec = plain.SPEC

    def define_schema(cls):
        return schema(spec)

    def execute(cls, **inputs):
        return node_output(getattr(plain(), spec.function)(**inputs))

    members = {"SPEC": spec, "__doc__": spec.description, "__module__": __name__,
               "define_schema": classmethod(define_schema), "execute": classmethod(execute)}
    # the plain functions themselves: ComfyUI reads their parameter names to choose what to pass
    for hook in ("validate_inputs", "fingerprint_inputs"):
        if hasattr(plain, hook):
            members[hook] = classmethod(getattr(plain, hook).__func__)
    if hasattr(plain, "validate_inputs") and spec.report_under:
        members["validate_inputs"] = one_place_validation(plain, spec)
    return type(spec.node_id, (io.ComfyNode,), members)


V3_NODES = [v3_node(plain) for plain in NODES.values()]


class LongVidExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        listen_for_prompts()
        return list(V3_NODES)
