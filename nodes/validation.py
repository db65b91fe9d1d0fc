"""Checks shared by ``validate_inputs`` (before anything runs) and the nodes' own start.

ComfyUI skips its own min/max/combo checks for every input a ``validate_inputs`` names, so
:func:`check_widgets` redoes them from the node's declared inputs (``SPEC``). Inputs fed by a link
reach ``validate_inputs`` as missing (``None``): those are checked again when the node runs.
Every message says what was found and what to change.
"""

from __future__ import annotations

import re

# validate_inputs' default for an optional socket: absent from the prompt (a linked one arrives as None)
NOT_CONNECTED = "<not connected>"


def check_widgets(node_cls, **values) -> str | None:
    """Range and combo checks of ``values`` against ``node_cls.SPEC``'s inputs; a message or None."""
    for name, value in values.items():
        if value is None:
            continue
        widget = node_cls.SPEC.input(name)
        if widget.kind == "COMBO":
            if value not in widget.choices():
                return f"{name}: {value!r} is not one of {widget.choices()}"
        elif widget.kind in ("INT", "FLOAT"):
            if widget.min is not None and value < widget.min:
                return f"{name} is {value}; the smallest allowed is {widget.min}"
            if widget.max is not None and value > widget.max:
                return f"{name} is {value}; the largest allowed is {widget.max}"
    return None


def parse_keyframe_starts(text: str) -> list[int]:
    """``"0, 48, 96"`` -> ``[0, 48, 96]``: whole frame numbers, increasing, the first 0.
    Raises ValueError saying what to write."""
    parts = [p for p in re.split(r"[,\s;]+", str(text).strip()) if p]
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
        return str(e)
    return None


def first_problem(*messages) -> str | bool:
    """What ``validate_inputs`` returns: the first message, or True when all are None."""
    return next((m for m in messages if m), True)


def raise_if(message: str | bool) -> None:
    if message is not True and message:
        raise ValueError(message)
