"""Checks shared by ``validate_inputs`` (before anything runs) and the nodes' own start.

ComfyUI skips its own min/max/combo checks for every input a ``validate_inputs`` names, so
:func:`check_widgets` redoes them from the node's declared inputs (``SPEC``). Inputs fed by a link
reach ``validate_inputs`` as missing (``None``): those are checked again when the node runs.
Every message says what was found and what to change.
"""

from __future__ import annotations

import inspect
import re

from longvid_core.problems import Problem, finite_problem, range_problem

# validate_inputs' default for an optional socket: absent from the prompt (a linked one arrives as None)
NOT_CONNECTED = "<not connected>"


def check_widgets(node_cls, **values) -> Problem | None:
    """Range, finiteness and combo checks of ``values`` against ``node_cls.SPEC``'s inputs."""
    for name, value in values.items():
        if value is None:
            continue
        widget = node_cls.SPEC.input(name)
        if widget.kind == "COMBO":
            choices = widget.choices()
            if value not in choices:
                shown = ", ".join(map(str, choices[:12])) + (f" and {len(choices) - 12} more" if len(choices) > 12 else "")
                if not choices and widget.model_folder:
                    return Problem(name, f"a file in ComfyUI's {widget.model_folder} folder", f"{value!r} (the folder "
                                   "is empty: put the file there and refresh)")
                where = f" (the files in ComfyUI's {widget.model_folder} folder)" if widget.model_folder else ""
                return Problem(name, f"one of {shown}{where}" if choices else "a listed choice", repr(value))
        elif widget.kind in ("INT", "FLOAT"):
            problem = range_problem(name, value, widget.min, widget.max)  # NaN/inf included
            if problem:
                return problem
    return None


def is_link(value) -> bool:
    """An API prompt's ``[node id, output index]``: a value known only when the node runs."""
    return isinstance(value, list) and len(value) == 2


def prompt_entry_inputs(prompt: dict, unique_id, node_id: str, named: dict) -> dict | None:
    """The inputs of node ``unique_id`` in ``prompt`` (an API prompt), if it is this node and holds the
    values ComfyUI passed by name (``named``); else None (another prompt, or none recorded)."""
    entry = (prompt or {}).get(str(unique_id))
    if not isinstance(entry, dict) or entry.get("class_type") != node_id:
        return None
    inputs = entry.get("inputs", {})
    same = all((None if is_link(inputs.get(k)) else inputs.get(k)) == v for k, v in named.items())
    return inputs if same else None


def validation_values(node_cls, named: dict, entry_inputs: dict | None) -> dict:
    """Keyword arguments for ``node_cls.validate_inputs`` when ComfyUI passed only ``named`` (the
    input problems are reported under): the other inputs it takes come from the node's prompt entry,
    a link as None (checked when the node runs). A value failing its own range, choice or type is left
    out: ComfyUI's own check reports that under its input, and once is enough."""
    values = dict(named)
    takes = inspect.signature(node_cls.validate_inputs).parameters
    for name, value in (entry_inputs or {}).items():
        if name in values or name not in takes:
            continue
        if is_link(value):
            values[name] = None
        elif not _refused_alone(node_cls, name, value):
            values[name] = value
    return values


def _refused_alone(node_cls, name: str, value) -> bool:
    """Refused by ComfyUI's own checks: a number out of its widget's range, or a value of the wrong
    type. Not left out: combo values and NaN/inf, which ComfyUI 0.3.64 lets through for V3 nodes."""
    widget = node_cls.SPEC.input(name)
    if not widget.is_widget or widget.kind == "COMBO":
        return False
    try:
        problem = check_widgets(node_cls, **{name: value})
    except TypeError:  # a value ComfyUI could not convert (it says so under that input)
        return True
    return problem is not None and finite_problem(name, value) is None


def problem_input(plain: type, spec, prompt: dict) -> str:
    """The input to file a failing check under: the input its problem concerns, for the first node of
    this class in ``prompt`` that fails and has that input as a widget value; else ``report_under``."""
    for unique_id, entry in (prompt or {}).items():
        if not isinstance(entry, dict) or entry.get("class_type") != spec.node_id:
            continue
        inputs = entry.get("inputs", {})
        try:
            problem = plain.validate_inputs(**validation_values(plain, {}, inputs))
        except Exception:  # a value the check cannot read: ComfyUI's own checks say why
            continue
        name = getattr(problem, "input", None)
        if problem is not True and name in inputs and not is_link(inputs[name]) and name in spec.input_names:
            return name
    return spec.report_under


class PlacedValidation:
    """A validate_inputs whose signature names one input, so ComfyUI shows each problem once, under it.
    ComfyUI 0.3.64 reads the signature (``inspect.getfullargspec``) just before it validates a node
    and files a failure under every input named there, so the name is chosen then: the input the
    problem concerns (:func:`problem_input`, from the prompt recorded as it arrived), else
    ``spec.report_under``. The node's other inputs come from that prompt (once ComfyUI has converted
    them); when it is not this prompt, they are left to the run-time checks."""

    def __init__(self, plain: type, spec, recorded_prompt):
        self.plain, self.spec, self.recorded_prompt = plain, spec, recorded_prompt

    @property
    def __signature__(self) -> inspect.Signature:
        parameter = inspect.Parameter.POSITIONAL_OR_KEYWORD
        anchor = problem_input(self.plain, self.spec, self.recorded_prompt())
        return inspect.Signature([inspect.Parameter("cls", parameter), inspect.Parameter(anchor, parameter,
                                                                                         default=None)])

    def __call__(self, cls, **named):
        entry = prompt_entry_inputs(self.recorded_prompt(), cls.hidden.unique_id, self.spec.node_id, named)
        return self.plain.validate_inputs(**validation_values(self.plain, named, entry))


def frame_list(text) -> list[str]:
    """A widget's list of frame numbers (``"0, 48 96;144"``) split into its items, not yet parsed."""
    return [p for p in re.split(r"[,\s;]+", str(text).strip()) if p]


def parse_keyframe_starts(text: str) -> list[int]:
    """``"0, 48, 96"`` -> ``[0, 48, 96]``: whole frame numbers, increasing, the first 0.
    Raises ValueError saying what to write."""
    parts = frame_list(text)
    example = "write one start frame per image, like '0, 48, 96'"
    if not parts:
        raise ValueError(f"keyframe_starts is empty; {example}")
    try:
        starts = [int(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"keyframe_starts {text!r} holds something that is not a whole frame number; {example}") from None
    if starts[0] != 0:
        raise ValueError(f"keyframe_starts must begin with 0 (the first image starts the video); found {starts}")
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(
            f"keyframe_starts must increase (each image takes over later than the one before); found {starts}")
    return starts


def check_keyframe_starts(text) -> str | None:
    if text is None:
        return None
    try:
        parse_keyframe_starts(text)
    except ValueError as e:
        return Problem.about("keyframe_starts", str(e))
    return None


def first_problem(*messages) -> str | bool:
    """What ``validate_inputs`` returns: the first message, or True when all are None or True (a
    nested check's own "no problem")."""
    return next((m for m in messages if m and m is not True), True)


def raise_if(message: str | bool) -> None:
    if message is not True and message:
        raise ValueError(message)
