"""Each node's inputs and outputs, declared once, in plain Python (no ComfyUI needed).

ComfyUI's V3 schema (``io.Schema``) is built from these in :mod:`nodes.comfy_v3` when ComfyUI's
``comfy_api`` is importable; the pack's own checks (:func:`nodes.validation.check_widgets`) and the
tests read them directly. Inputs are listed in the order saved workflows store them: required
ones first, then optional ones, each new input last (a UI file keeps its widget values by position).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


@dataclass(frozen=True)
class Input:
    name: str
    kind: str  # a widget kind (WIDGET_KINDS) or a socket type: "IMAGE", "LATENT", "LONGVID_MODEL", ...
    tooltip: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    round: float | None = None
    # COMBO choices; a callable for lists read when the schema is built (files of the user's install)
    options: Sequence[str] | Callable[[], list[str]] | None = None
    optional: bool = False
    advanced: bool = False  # rarely touched: newer frontends fold it away
    control_after_generate: bool = False
    model_folder: str | None = None  # a COMBO of model files of this folder kind (re-run when one changes)

    @property
    def is_widget(self) -> bool:
        return self.kind in WIDGET_KINDS

    def choices(self) -> list:
        return list(self.options() if callable(self.options) else self.options or [])


@dataclass(frozen=True)
class Output:
    name: str
    kind: str
    tooltip: str


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    display_name: str
    description: str  # shown in the frontend's node help panel
    function: str  # the logic class's method that runs the node, called with the inputs by name
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    output_node: bool = False
    category: str = "LongVid"
    # ComfyUI shows a failing validate_inputs under every input it names; the V3 node names only this
    # required widget and reads the others from the prompt, so each problem shows once (nodes/comfy_v3.py)
    report_under: str | None = None

    def input(self, name: str) -> Input:
        found = [i for i in self.inputs if i.name == name]
        if not found:
            raise KeyError(f"{self.node_id} has no input {name!r}; its inputs are {self.input_names}")
        return found[0]

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]


# Short constructors, so a node's declaration reads like its widget list.

def Socket(name: str, kind: str, tooltip: str, **options) -> Input:
    return Input(name, kind, tooltip, **options)


def Int(name: str, default: int, min: int, max: int, tooltip: str, **options) -> Input:
    return Input(name, "INT", tooltip, default=default, min=min, max=max, **options)


def Float(name: str, default: float, min: float, max: float, tooltip: str, **options) -> Input:
    return Input(name, "FLOAT", tooltip, default=default, min=min, max=max, **options)


def String(name: str, default: str, tooltip: str, **options) -> Input:
    return Input(name, "STRING", tooltip, default=default, **options)


def Boolean(name: str, default: bool, tooltip: str, **options) -> Input:
    return Input(name, "BOOLEAN", tooltip, default=default, **options)


def Combo(name: str, options, default: str | None, tooltip: str, **more) -> Input:
    return Input(name, "COMBO", tooltip, default=default, options=options, **more)
