"""LongVidScheduleView: a picture (and a few sentences) of the progressive sampler's layout."""

from __future__ import annotations

from collections import Counter

from longvid_core.evaluation.schedule_plot import draw_schedule
from longvid_core.run.pipeline import AUTO, PROGRESSIVE, TRAINING_FREE, settings_problem
from longvid_core.sampling import plan_progressive
from longvid_core.sampling.schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW, STAGES, progressive_table

from .sampling import checked_schedule
from .spec import Boolean, Int, NodeSpec, Output, Socket
from .validation import NOT_CONNECTED, check_widgets, first_problem, raise_if

SCHEDULE_INPUT = Socket("schedule", "LONGVID_SCHEDULE", optional=True, tooltip=(
    "Sampler settings from LongVid Settings, the same ones the sampler gets: when connected they replace window, "
    "chunk and steps here, so the picture is the schedule the sampler runs."))


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


def schedule_note(schedule) -> str:
    """What the sampler does with a connected schedule beyond the progressive layout drawn."""
    if schedule.mode == AUTO:
        return (f"mode auto: the sampler chooses for its model. Weights fine-tuned progressively by LongVid's "
                f"trainer run progressive with the layout they were trained with; others run {TRAINING_FREE} "
                "(windows of window + chunk frames, not this rolling layout). Drawn: the progressive layout of "
                "these settings.")
    if schedule.mode != PROGRESSIVE:
        return (f"mode {schedule.mode}: the sampler does not roll a window of noise levels; drawn for comparison: "
                "the progressive layout of these window/chunk/steps.")
    if schedule.partitions > 1 or schedule.lookahead:
        return (f"partitions {schedule.partitions}" + (", lookahead" if schedule.lookahead else "") + ": each row "
                "drawn runs as up to that many calls, one per partition" + (", each also seeing the partition "
                "ahead" if schedule.lookahead else "") + "; the noise levels are as drawn.")
    return ""


class LongVidScheduleView:
    SPEC = NodeSpec(
        node_id="LongVidScheduleView",
        display_name="LongVid Schedule View",
        description=(
            "Draws the progressive sampler's noise levels for window/chunk/steps: one row per denoiser call (time "
            "runs down), one column per chunk of frames, colour = noise (yellow = pure noise ... dark purple = "
            "almost clean, white = the clean chunk in front, grey = done); the left band marks the initialization "
            "(blue), rolling (green) and termination (orange) stages. Also explains the arithmetic in words. Connect "
            "the schedule of LongVid Settings that the sampler gets, and it draws what the sampler runs."),
        function="draw",
        report_under="window",
        inputs=(
            Int("window", DEFAULT_WINDOW, 1, 1024, tooltip=(
                "Noisy frames in the rolling window, a multiple of chunk (as in LongVid Sample). Replaced by a "
                "connected schedule.")),
            Int("chunk", DEFAULT_CHUNK, 1, 1024, tooltip=(
                "Frames that enter and leave the window together (as in LongVid Sample). Replaced by a connected "
                "schedule.")),
            Int("steps", DEFAULT_STEPS, 1, 1000, tooltip=(
                "Denoising steps every frame goes through, a multiple of window / chunk (as in LongVid Sample). "
                "Replaced by a connected schedule.")),
            Int("frames", 48, 1, 100_000, tooltip="New frames to generate (set it as on LongVid Sample)."),
            Boolean("with_prefix", False, tooltip=(
                "Extending a video: its last chunk is clean in front from the first call.")),
            Int("max_size", 768, 64, 4096, advanced=True,
                tooltip="Largest grid side in pixels (long videos are subsampled)."),
            SCHEDULE_INPUT,
        ),
        outputs=(Output("image", "IMAGE", "The schedule as a picture."),
                 Output("explanation", "STRING", "The window/chunk/steps arithmetic in words.")),
    )

    @classmethod
    def validate_inputs(cls, window=None, chunk=None, steps=None, frames=None, max_size=None,
                        schedule=NOT_CONNECTED):
        if schedule is not NOT_CONNECTED:  # its window/chunk/steps are drawn, the widgets are unused
            window = chunk = steps = None
        return first_problem(check_widgets(cls, window=window, chunk=chunk, steps=steps, frames=frames,
                                           max_size=max_size),
                             settings_problem(PROGRESSIVE, window=window, chunk=chunk, steps=steps))

    def draw(self, window, chunk, steps, frames, with_prefix, max_size, schedule=None):
        note = ""
        if schedule is None:
            raise_if(self.validate_inputs(window, chunk, steps, frames, max_size))
        else:
            schedule = checked_schedule(schedule)
            window, chunk, steps, note = schedule.window, schedule.chunk, schedule.steps, schedule_note(schedule)
            raise_if(check_widgets(type(self), frames=frames, max_size=max_size))
            problem = settings_problem(PROGRESSIVE, window=window, chunk=chunk, steps=steps)
            if problem:
                raise ValueError(f"LongVid Schedule View draws progressive layouts; the schedule ({schedule.describe()})"
                                 f" is not one: {problem}")
        table = progressive_table(window, chunk, steps, frames, clean_start=with_prefix)
        plan = plan_progressive(frames + (chunk if with_prefix else 0), window=window, chunk=chunk, steps=steps,
                                prefix_frames=chunk if with_prefix else 0)
        text = describe_layout(table, plan) + (f"\n{note}" if note else "")
        return (draw_schedule(table, max_size).unsqueeze(0), text)
