"""The progress bar: tqdm, as diffusers' training scripts show it (steps done / ``--max-steps``,
elapsed time, ETA, the running loss), on the main process only.

It is drawn only where someone watches it: on a terminal. When stderr is a file or a pipe (a
cluster job's log, CI, the tests) it stays off, since the log lines (``--log-every``) already say
the same and a bar's carriage returns make a log file unreadable. ``--no-progress-bar`` turns it
off on a terminal too.
"""

from __future__ import annotations

import sys


def progress_bar_wanted(enabled: bool, main_process: bool, stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(enabled and main_process and isatty is not None and isatty())


def make_progress_bar(start: int, total: int, show: bool, stream=None):
    """A tqdm bar at ``start`` of ``total`` steps; a disabled one (every call a no-op) when not ``show``."""
    from tqdm import tqdm

    return tqdm(total=total, initial=start, desc="training", unit="step", file=stream or sys.stderr,
                dynamic_ncols=True, disable=not show)


def show_loss(bar, loss) -> None:
    """Advance one step and show ``loss`` (a tensor: read only when the bar is drawn, since ``.item()``
    waits for the GPU)."""
    if bar.disable:
        return
    bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)
    bar.update(1)


__all__ = ["make_progress_bar", "progress_bar_wanted", "show_loss"]
