"""A picture of the progressive sampler's noise levels: who is how noisy at every denoiser call.

Window/chunk/steps arithmetic is hard to picture from numbers alone (PA-VDM Sec. 3.1-3.4), so this
draws :func:`longvid_core.sampling.schedules.progressive_table` row by row:

- one **row** per denoiser call, time running downwards;
- one **column** per chunk of ``chunk`` latent frames, the video running to the right (with a
  prefix, a first column for the given video's clean chunk);
- cell **colour** = the chunk's noise level at that call: yellow = pure noise (level 0), through
  green and blue, to dark purple = the last step before clean; white = the clean conditioning
  chunk in front of the window; dark grey = finished and out of the window; black = not yet in it;
- a **stage band** on the left: blue = initialization (the window fills), green = rolling
  (one chunk in, one out), orange = termination (the window drains).

A diagonal band of colour therefore walks down and to the right: its width is the window, its
slope is ``d = steps * chunk / window`` calls per chunk. Pure torch + PIL (no plotting library).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..sampling.schedules import INITIALIZATION, ROLLING, TERMINATION, ProgressiveTable

# Viridis anchor colours, from clean (0) to pure noise (1).
_VIRIDIS = (
    (0.267, 0.005, 0.329),
    (0.231, 0.322, 0.545),
    (0.128, 0.567, 0.551),
    (0.369, 0.789, 0.383),
    (0.993, 0.906, 0.144),
)
CLEAN_COLOUR = (1.0, 1.0, 1.0)  # the clean conditioning chunk in front of the window
DONE_COLOUR = (0.25, 0.25, 0.25)  # finished, no longer in the window
FUTURE_COLOUR = (0.0, 0.0, 0.0)  # not yet in the window
BACKGROUND = (0.12, 0.12, 0.14)
STAGE_COLOURS = {
    INITIALIZATION: (0.30, 0.55, 0.95),
    ROLLING: (0.35, 0.75, 0.35),
    TERMINATION: (0.95, 0.55, 0.25),
}

MAX_CELL = 16  # largest cell side in pixels
BAND_WIDTH = 12  # stage band left of the grid
MARGIN = 8
HEADER_HEIGHT = 44  # two lines of text
FOOTER_HEIGHT = 30  # colour legend
MIN_WIDTH = 560  # room for the text


def level_colour(level: int, steps: int) -> tuple[float, float, float]:
    """Colour of a chunk at ``level`` (0 = pure noise .. steps-1 = last step) of ``steps``."""
    noise = 1.0 - level / max(steps - 1, 1)  # 1 at level 0, 0 at the last step
    position = noise * (len(_VIRIDIS) - 1)
    low = min(int(position), len(_VIRIDIS) - 2)
    frac = position - low
    a, b = _VIRIDIS[low], _VIRIDIS[low + 1]
    return tuple(a[i] + (b[i] - a[i]) * frac for i in range(3))


@dataclass(frozen=True)
class ScheduleLayout:
    """Where things are in the picture: the grid's top-left corner, its size, and which table row
    and column each grid pixel shows (rows/columns are subsampled when there are more than pixels)."""

    width: int
    height: int
    grid_x: int
    grid_y: int
    grid_width: int
    grid_height: int
    rows: int  # table rows (denoiser calls)
    columns: int  # chunk columns (plus one for a prefix)
    prefix_column: bool

    def row_at(self, y: int) -> int:
        """Table row shown at grid pixel row ``y``."""
        return y * self.rows // self.grid_height

    def column_at(self, x: int) -> int:
        """Column shown at grid pixel column ``x`` (0 = the prefix column when there is one)."""
        return x * self.columns // self.grid_width

    def cell_centre(self, row: int, column: int) -> tuple[int, int]:
        """Picture pixel ``(x, y)`` inside the cell of ``row`` and ``column`` (when not subsampled away)."""
        y0 = -(-row * self.grid_height // self.rows)
        y1 = -(-(row + 1) * self.grid_height // self.rows)
        x0 = -(-column * self.grid_width // self.columns)
        x1 = -(-(column + 1) * self.grid_width // self.columns)
        return self.grid_x + (x0 + x1 - 1) // 2, self.grid_y + (y0 + y1 - 1) // 2


def schedule_layout(table: ProgressiveTable, max_size: int = 1024) -> ScheduleLayout:
    """The picture's geometry for ``table``: cells up to :data:`MAX_CELL` px, grid at most
    ``max_size`` px on each side."""
    rows = len(table)
    columns = table.num_chunks + (1 if table.clean_start else 0)
    cell_h = max(1, min(MAX_CELL, max_size // rows))
    cell_w = max(1, min(MAX_CELL, max_size // columns))
    grid_height = min(rows * cell_h, max_size)
    grid_width = min(columns * cell_w, max_size)
    grid_x = MARGIN + BAND_WIDTH + 2
    width = max(MIN_WIDTH, grid_x + grid_width + MARGIN)
    height = HEADER_HEIGHT + grid_height + FOOTER_HEIGHT
    return ScheduleLayout(width, height, grid_x, HEADER_HEIGHT, grid_width, grid_height, rows, columns,
                          table.clean_start)


def cell_colour(table: ProgressiveTable, row, column: int) -> tuple[float, float, float]:
    """Colour of chunk column ``column`` (with a prefix, column 0 is the prefix's clean chunk and
    chunk m is column m+1) at table row ``row`` (a :class:`ProgressiveRow`)."""
    chunk = column - (1 if table.clean_start else 0)
    if chunk in row.chunks:
        return level_colour(row.levels[chunk - row.first_chunk], table.steps)
    if chunk == row.first_chunk - 1 and row.clean_chunk:
        return CLEAN_COLOUR
    return DONE_COLOUR if chunk < row.first_chunk else FUTURE_COLOUR


def draw_schedule(table: ProgressiveTable, max_size: int = 1024) -> torch.Tensor:
    """Draw ``table`` (see the module doc) -> ComfyUI IMAGE-style tensor ``[H, W, 3]`` float32 0..1."""
    from PIL import Image, ImageDraw, ImageFont

    layout = schedule_layout(table, max_size)
    picture = torch.tensor(BACKGROUND).expand(layout.height, layout.width, 3).clone()

    row_index = [layout.row_at(y) for y in range(layout.grid_height)]
    column_index = torch.tensor([layout.column_at(x) for x in range(layout.grid_width)])
    distinct_rows = sorted(set(row_index))
    row_colours = {}
    for r in distinct_rows:  # only the rows that appear: a huge table costs at most max_size rows
        row = table[r]
        colours = torch.tensor([cell_colour(table, row, c) for c in range(layout.columns)])
        row_colours[r] = (colours[column_index], STAGE_COLOURS[row.stage])
    gx, gy = layout.grid_x, layout.grid_y
    for y, r in enumerate(row_index):
        colours, stage = row_colours[r]
        picture[gy + y, gx:gx + layout.grid_width] = colours
        picture[gy + y, MARGIN:MARGIN + BAND_WIDTH] = torch.tensor(stage)

    image = Image.fromarray((picture * 255).round().to(torch.uint8).numpy())
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    k, d = table.chunks_per_window, table.chunk_spacing
    draw.text((MARGIN, 4), f"window {table.window} frames = {k} chunks of {table.chunk}, {table.steps} steps: "
                            f"chunks {d} steps apart, {len(table)} denoiser calls for {table.frames} frames",
              fill=(235, 235, 235), font=font)
    draw.text((MARGIN, 22), "rows: calls (time runs down)   columns: chunks   stage: blue init / green "
                            "rolling / orange end", fill=(200, 200, 200), font=font)
    legend_y = layout.height - FOOTER_HEIGHT + 8
    bar_x, bar_w = MARGIN + 44, 160
    for i in range(bar_w):
        level = round(i * (table.steps - 1) / max(bar_w - 1, 1))
        colour = tuple(round(255 * v) for v in level_colour(level, table.steps))
        draw.line([(bar_x + i, legend_y), (bar_x + i, legend_y + 10)], fill=colour)
    draw.text((MARGIN, legend_y), "noise", fill=(220, 220, 220), font=font)
    draw.text((bar_x + bar_w + 6, legend_y), "clean   white: clean chunk in front   grey: done",
              fill=(220, 220, 220), font=font)
    return torch.from_numpy(np.asarray(image).copy()).float() / 255.0


__all__ = [
    "CLEAN_COLOUR",
    "DONE_COLOUR",
    "FUTURE_COLOUR",
    "STAGE_COLOURS",
    "ScheduleLayout",
    "cell_colour",
    "draw_schedule",
    "level_colour",
    "schedule_layout",
]
