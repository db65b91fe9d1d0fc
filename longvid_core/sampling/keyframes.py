"""Keyframe conditioning: which :class:`SVDCond` each frame of the video is sampled with.

``cond`` is one :class:`SVDCond` for the whole video, or keyframes ``[(start_frame, SVDCond), ...]``
(first start 0): frame k uses the keyframe with the largest start <= k. A call whose frames span
two keyframes gets a per-frame cond (:meth:`SVDCond.stack_frames`).
"""

from __future__ import annotations

import bisect
from typing import Sequence, Union

from ..networks.conditioning import SVDCond

Keyframes = Sequence[tuple[int, SVDCond]]
CondOverTime = Union[SVDCond, Keyframes]


class KeyframeConds:
    """Which :class:`SVDCond` each frame uses (see the module doc); caches the last window's cond."""

    def __init__(self, cond: CondOverTime):
        if isinstance(cond, (list, tuple)):
            if not cond:
                raise ValueError("keyframes: expected at least one (start_frame, SVDCond) pair; got an empty list")
            try:
                pairs = sorted(((int(start), c) for start, c in cond), key=lambda pair: pair[0])
            except (TypeError, ValueError):
                raise ValueError(
                    "cond: expected one SVDCond or a list of (start_frame, SVDCond) pairs; "
                    f"got a list starting with {cond[0]!r}"
                ) from None
            starts = [start for start, _ in pairs]
            if starts[0] != 0:
                raise ValueError(f"keyframes: the first keyframe must start at frame 0; it starts at {starts[0]}")
            if len(set(starts)) != len(starts):
                raise ValueError(f"keyframes: two keyframes start at the same frame; starts are {starts}")
            for start, c in pairs:
                if isinstance(c, SVDCond) and c.per_frame:
                    raise ValueError(
                        f"keyframes: the keyframe at frame {start} has a per-frame cond; expected one cond "
                        "for all of its frames ([B, 1, D] embedding, [B, 4, h, w] concat latent)"
                    )
            self._starts = starts
            self._conds = [c for _, c in pairs]
        else:
            self._starts, self._conds = [0], [cond]
        self._cached_key = None
        self._cached = None

    def for_frames(self, first_frame: int, count: int):
        """The cond for the contiguous frames ``first_frame .. first_frame + count - 1``."""
        key = (first_frame, count)
        if key != self._cached_key:
            first = bisect.bisect_right(self._starts, first_frame) - 1
            last = bisect.bisect_right(self._starts, first_frame + count - 1) - 1
            if first == last:
                cond = self._conds[first]
            else:
                frames = range(first_frame, first_frame + count)
                cond = SVDCond.stack_frames([self._conds[bisect.bisect_right(self._starts, k) - 1] for k in frames])
            self._cached_key, self._cached = key, cond
        return self._cached


__all__ = ["CondOverTime", "KeyframeConds", "Keyframes"]
