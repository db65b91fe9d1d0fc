"""The one progress/cancel callback type of a generation run: sampling and decoding report alike.

A callback gets a :class:`Progress` after every unit of work (a denoiser call while sampling, a
decoded window while decoding). Returning ``False`` asks to stop: the work in flight finishes, the
frames it finished are still handed on, then :class:`Cancelled` is raised. A callback may also
raise its own exception (ComfyUI's interrupt) to stop at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:  # annotations only: the command line's --help imports this before torch
    import torch

SAMPLING = "sampling"  # unit: denoiser calls
DECODING = "decoding"  # unit: decoded frames


@dataclass(frozen=True)
class Progress:
    """``done``/``total`` count the stage's unit; ``frames_done``/``frames_total`` count finished
    new frames (a prefix excluded). ``newest_latent`` ``[B, 4, h, w]`` is the frame that just
    finished sampling, or ``None``. ``total`` is ``None`` where the length is not known."""

    stage: str
    done: int
    total: int | None
    frames_done: int
    frames_total: int | None
    newest_frame_index: int | None = None
    newest_latent: torch.Tensor | None = None


ProgressCallback = Callable[[Progress], object]


class Cancelled(Exception):
    """The progress callback asked to stop; what was handed on before is valid."""

    def __init__(self, stage: str = SAMPLING, done: int | None = None, frames_done: int | None = None):
        unit = "denoiser calls" if stage == SAMPLING else "decoded frames"
        super().__init__("cancelled" if done is None else f"{stage} cancelled after {done} {unit} "
                         f"and {frames_done} finished frames")
        self.stage = stage
        self.done = done
        self.frames_done = frames_done


def report(callback: ProgressCallback | None, progress: Progress) -> bool:
    """Tell the callback; True when it asks to stop."""
    return callback is not None and callback(progress) is False


__all__ = ["DECODING", "SAMPLING", "Cancelled", "Progress", "ProgressCallback", "report"]
