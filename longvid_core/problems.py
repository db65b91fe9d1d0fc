"""One shape for every refused input: which input, what was expected, what was found.

A :class:`Problem` is the text ``"<input>: expected …, found …"`` (a ``str``, so the checks that
return it read as messages) that also knows the input it concerns. The command line shows it as
``longvid: error: --<flag>: expected …, found …``; the ComfyUI nodes file it under that input's
widget; Python callers get an :class:`InputError` (a ``ValueError``) carrying it.
"""

from __future__ import annotations

import math
from pathlib import Path


class Problem(str):
    """``"<input>: expected <expected>, found <found>[; <advice>]"``; ``.input`` names the input
    (a pipeline / node input name such as ``window``, or a flag such as ``--out``)."""

    input: str
    expected: str
    found: str

    def __new__(cls, input: str, expected: str, found, advice: str = "") -> "Problem":
        text = f"{input}: expected {expected}, found {found}" + (f"; {advice}" if advice else "")
        made = super().__new__(cls, text)
        made.input, made.expected, made.found = input, expected, str(found)
        return made

    @classmethod
    def about(cls, input: str, message: str) -> "Problem":
        """A message in other words (``"keyframe_starts must begin with 0 ..."``) that concerns ``input``."""
        made = str.__new__(cls, message if message.startswith(input) else f"{input}: {message}")
        made.input, made.expected, made.found = input, "", ""
        return made


class InputError(ValueError):
    """A refused input (a setting, a file, a folder); ``.problem`` says which and why."""

    def __init__(self, problem: Problem | str, input: str | None = None):
        super().__init__(str(problem))
        self.problem = problem
        self.input = getattr(problem, "input", None) or input


def raise_problem(problem: Problem | str | None) -> None:
    """Raise :class:`InputError` for a problem; None (no problem) returns."""
    if problem:
        raise InputError(problem)


def finite_problem(name: str, value) -> Problem | None:
    """NaN and ±inf slip through every ``<`` / ``>`` range check; refuse them where they enter."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return Problem(name, "a finite number", value)
    return None


def range_problem(name: str, value, smallest=None, largest=None) -> Problem | None:
    """``smallest <= value <= largest`` (either bound may be None), and finite."""
    if value is None:
        return None
    problem = finite_problem(name, value)
    if problem:
        return problem
    if smallest is not None and largest is not None and not smallest <= value <= largest:
        return Problem(name, f"a value from {smallest} to {largest}", value)
    if smallest is not None and not value >= smallest:
        return Problem(name, f"at least {smallest}", value)
    if largest is not None and not value <= largest:
        return Problem(name, f"at most {largest}", value)
    return None


def raised_in(exc: BaseException, folders) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in one of ``folders``: a check of the
    project's own (with a message for the user), not an error inside torch or another library.
    ``training.user_errors.raised_in_own_code`` repeats it: the trainer answers argument errors
    without importing torch, which any ``longvid_core`` module brings in."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    source = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(source.is_relative_to(folder) for folder in folders)


def describe_path(path) -> str:
    """What is at ``path``, in the words of an error message."""
    path = Path(path)
    if path.is_dir():
        return f"the folder {path}"
    if path.exists():
        return f"{path} ({path.stat().st_size:,} bytes)"
    return f"nothing at {path}"


__all__ = ["InputError", "Problem", "describe_path", "finite_problem", "raise_problem", "raised_in", "range_problem"]
