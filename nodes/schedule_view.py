"""LongVidScheduleView: a picture (and a few sentences) of the progressive sampler's layout."""

from __future__ import annotations

from collections import Counter

from longvid_core.pipeline import PROGRESSIVE, settings_problem
from longvid_core.samplers import plan_progressive
from longvid_core.schedule_plot import draw_schedule
from longvid_core.schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW, STAGES, progressive_table

from .spec import Boolean, Int, NodeSpec, Output
from .validation import check_widgets, first_problem, raise_if


def describe_layout(table, plan) -> str:
    """The window/chunk/steps arithmetic in words, for the text output."""
    stages = Counter(row.stage for row in table)
    k, d = table.chunks_per_window, table.chunk_spacing
    return "\n".join([
        f"window {table.window} frames = {k} chunks of {table.chunk}; steps {table.steps} = {k} chunks x "
        f"d = {d} steps between neighbouring chunks.",
        f"Every denoiser call lowers every chunk one step; every {d} call(s) the front chunk is finished, leaves, "
        f"and stays in front as the clean chunk: the model sees window + chunk = {table.window + table.chunk} "
        f"frames per call.",
        f"{table.frames} frames: {len(table)} denoiser calls ("
        + ", ".join(f"{stages[s]} {s}" for s in STAGES) + f"), {plan.evaluations_per_frame:.2f} frame evaluations "
        f"per frame (an ordinary {table.steps}-step sampler: {table.steps}).",
    ])


class LongVidScheduleView:
    SPEC = NodeSpec(
        node_id="LongVidScheduleView",
        display_name="LongVid Schedule View",
        description=(
            "Draws the progressive sampler's noise levels for window/chunk/steps: one row per denoiser call (time "
            "runs down), one column per chunk of frames, colour = noise (yellow = pure noise ... dark purple = "
            "almost clean, white = the clean chunk in front, grey = done); the left band marks the initialization "
            "(blue), rolling (green) and termination (orange) stages. Also explains the arithmetic in words."),
        function="draw",
        inputs=(
            Int("window", DEFAULT_WINDOW, 1, 1024, tooltip=(
                "Noisy frames in the rolling window, a multiple of chunk (as in LongVid Sample).")),
            Int("chunk", DEFAULT_CHUNK, 1, 1024, tooltip=(
                "Frames that enter and leave the window together (as in LongVid Sample).")),
            Int("steps", DEFAULT_STEPS, 1, 1000, tooltip=(
                "Denoising steps every frame goes through, a multiple of window / chunk (as in LongVid Sample).")),
            Int("frames", 48, 1, 100_000, tooltip="New frames to generate (as in LongVid Sample)."),
            Boolean("with_prefix", False, tooltip=(
                "Extending a video: its last chunk is clean in front from the first call.")),
            Int("max_size", 768, 64, 4096, advanced=True,
                tooltip="Largest grid side in pixels (long videos are subsampled)."),
        ),
        outputs=(Output("image", "IMAGE", "The schedule as a picture."),
                 Output("explanation", "STRING", "The window/chunk/steps arithmetic in words.")),
    )

    @classmethod
    def validate_inputs(cls, window=None, chunk=None, steps=None, frames=None, max_size=None):
        return first_problem(check_widgets(cls, window=window, chunk=chunk, steps=steps, frames=frames,
                                           max_size=max_size),
                             settings_problem(PROGRESSIVE, window=window, chunk=chunk, steps=steps))

    def draw(self, window, chunk, steps, frames, with_prefix, max_size):
        raise_if(self.validate_inputs(window, chunk, steps, frames, max_size))
        table = progressive_table(window, chunk, steps, frames, clean_start=with_prefix)
        plan = plan_progressive(frames + (chunk if with_prefix else 0), window=window, chunk=chunk, steps=steps,
                                prefix_frames=chunk if with_prefix else 0)
        return (draw_schedule(table, max_size).unsqueeze(0), describe_layout(table, plan))
