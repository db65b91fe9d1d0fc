"""LongVidSettings (-> LONGVID_SCHEDULE): the sampler settings made once, for the sampler and the schedule view."""

from __future__ import annotations

from dataclasses import replace

from longvid_core.run.modes import DEFAULT_SAMPLER, DEFAULT_SCHEDULER

from .sampling import (CACHE_INTERVAL_INPUT, CHUNK_INPUT, CONTEXT_OVERLAP_INPUT, CONTEXT_SIGMA_INPUT, LOOKAHEAD_INPUT,
                       MODE_INPUT, PARTITIONS_INPUT, SAMPLER_INPUT, SCHEDULER_INPUT, STEPS_INPUT, WINDOW_INPUT,
                       widget_schedule)
from .spec import NodeSpec, Output
from .validation import check_widgets, first_problem, raise_if

SCHEDULE_OUTPUT = Output("schedule", "LONGVID_SCHEDULE", (
    "The settings: connect to the schedule input of LongVid Sample / Sample to Video and LongVid Schedule View."))


class LongVidSettings:
    SPEC = NodeSpec(
        node_id="LongVidSettings",
        display_name="LongVid Settings (schedule)",
        description=(
            "The sampler's settings in one place: mode, window, chunk, steps and the training-free options. Connect "
            "its output to LongVid Sample (or Sample to Video) and to LongVid Schedule View: the view then draws "
            "exactly the schedule the sampler runs. Frames, cfg and seed stay on the sampler."),
        function="make",
        report_under="window",
        inputs=(MODE_INPUT, WINDOW_INPUT, CHUNK_INPUT, STEPS_INPUT,
                *(replace(w, optional=False) for w in (PARTITIONS_INPUT, LOOKAHEAD_INPUT, CONTEXT_OVERLAP_INPUT,
                                                       CONTEXT_SIGMA_INPUT)),
                CACHE_INTERVAL_INPUT, SAMPLER_INPUT, SCHEDULER_INPUT),  # added after the node shipped: optional, last
        outputs=(SCHEDULE_OUTPUT,),
    )

    @classmethod
    def validate_inputs(cls, mode=None, window=None, chunk=None, steps=None, partitions=None, lookahead=None,
                        context_overlap=None, context_sigma=None, cache_interval=None, sampler_name=None,
                        scheduler=None):
        return first_problem(
            check_widgets(cls, mode=mode, window=window, chunk=chunk, steps=steps, partitions=partitions,
                          context_overlap=context_overlap, context_sigma=context_sigma, cache_interval=cache_interval,
                          sampler_name=sampler_name, scheduler=scheduler),
            widget_schedule(mode, window, chunk, steps, context_sigma, partitions, lookahead, context_overlap,
                            cache_interval, sampler_name, scheduler).problem())

    def make(self, mode, window, chunk, steps, partitions, lookahead, context_overlap, context_sigma, cache_interval=0,
             sampler_name=DEFAULT_SAMPLER, scheduler=DEFAULT_SCHEDULER):
        raise_if(self.validate_inputs(mode, window, chunk, steps, partitions, lookahead, context_overlap,
                                      context_sigma, cache_interval, sampler_name, scheduler))
        return (widget_schedule(mode, window, chunk, steps, context_sigma, partitions, lookahead, context_overlap,
                                cache_interval, sampler_name, scheduler),)
