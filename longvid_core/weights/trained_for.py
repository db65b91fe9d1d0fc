"""What a checkpoint was trained for, as the trainer records it in every file it writes.

SVD-XT and the ExVideo release were trained with one noise level per clip and carry nothing here;
a file fine-tuned by ``training/train.py`` with progressive noise records the window, chunk and
steps of the sampler table it learned, so ``auto`` sampling can run it as trained (PA-VDM Sec. 3).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Mapping

META_TRAINED_FOR = "longvid.trained_for"


@dataclass(frozen=True)
class TrainedFor:
    """``progressive``: fine-tuned with per-frame (progressive) noise levels on the sampler table
    ``window``/``chunk``/``steps``; ``context_sigma``: the clean chunk's training noise (0: clean);
    ``clip_frames``: frames per training clip. ``sampler_name``/``scheduler``/``cfg`` (or None): what
    the weights are best sampled with, which ``auto`` uses; ``distilled``: consistency-distilled
    weights (AnimateLCM-SVD-xt and the like), sampled with ``lcm`` at cfg 1; ``guide_frames``: the
    fraction of training clips that had clean frames at random positions (the trainer's
    ``--guide-frame-fraction``), so ``auto`` shows guides clean in every mode."""

    progressive: bool
    clip_frames: int | None = None
    window: int | None = None
    chunk: int | None = None
    steps: int | None = None
    context_sigma: float = 0.0
    sampler_name: str | None = None
    scheduler: str | None = None
    cfg: float | None = None
    distilled: bool = False
    guide_frames: float = 0.0

    def to_metadata(self) -> dict[str, str]:
        return {META_TRAINED_FOR: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str] | None) -> "TrainedFor | None":
        """The record in a file's metadata, or None (a file LongVid's trainer did not write)."""
        text = (metadata or {}).get(META_TRAINED_FOR)
        if not text:
            return None
        try:
            values = json.loads(text)
            return cls(**{k: values[k] for k in values if k in cls.__dataclass_fields__})
        except (ValueError, TypeError) as e:
            raise ValueError(f"metadata {META_TRAINED_FOR}: expected a JSON record of {list(cls.__dataclass_fields__)}; "
                             f"found {text[:200]!r} ({e})") from None

    def describe(self) -> str:
        if self.progressive:
            noise = f", context sigma {self.context_sigma:g}" if self.context_sigma else ""
            return f"progressive fine-tuned: window {self.window}, chunk {self.chunk}, {self.steps} steps{noise}"
        return f"one noise level per clip ({self.clip_frames}-frame clips)"


__all__ = ["META_TRAINED_FOR", "TrainedFor"]
