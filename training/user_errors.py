"""Errors the user can fix (a setting, a file, a folder), shown as one line instead of a traceback.

``train.main`` prints ``error: <message>`` and exits with :data:`EXIT_USER_ERROR` for these;
anything else is a bug and keeps its traceback. What counts as the user's (:func:`is_user_error`):

- :class:`UserError`, raised where the trainer checks its input;
- a ``ValueError`` (``CheckpointError`` included) or ``FloatingPointError`` raised by LongVid's
  own code (``training/``, ``longvid_core/``), whose messages say what was expected and found;
  the same types raised inside torch or another library are bugs;
- a missing or unreadable file or folder (``FileNotFoundError``, ``PermissionError``, ...).
"""

from __future__ import annotations

from pathlib import Path

EXIT_USER_ERROR = 2  # argparse's status for a bad command line
REPOSITORY = Path(__file__).resolve().parent.parent
OWN_CODE = (REPOSITORY / "training", REPOSITORY / "longvid_core")
FILE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


class UserError(ValueError):
    """Input the user has to change; the message says what was expected and what was found."""


def raised_in_own_code(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is in ``training/`` or ``longvid_core/``."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    source = Path(tb.tb_frame.f_code.co_filename).resolve()
    return any(source.is_relative_to(folder) for folder in OWN_CODE)


def is_user_error(exc: BaseException) -> bool:
    if isinstance(exc, UserError):
        return True
    if isinstance(exc, FILE_ERRORS):
        return True
    return isinstance(exc, (ValueError, FloatingPointError)) and raised_in_own_code(exc)


def one_line(exc: BaseException) -> str:
    """``error: ...`` on one line (a multi-line message is joined with "; ")."""
    if isinstance(exc, FILE_ERRORS) and exc.filename is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"  # OSError's own text is "[Errno 2] ..."
    else:
        message = str(exc) or type(exc).__name__
    parts = [part.strip() for part in message.splitlines() if part.strip()]
    message = "; ".join(parts)
    return message if message.startswith("error: ") else f"error: {message}"


__all__ = ["EXIT_USER_ERROR", "UserError", "is_user_error", "one_line", "raised_in_own_code"]
