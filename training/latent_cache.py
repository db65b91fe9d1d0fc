"""The latent cache: a clip's VAE latents and its first frame's conditioning, encoded once and
read back instead of decoding and encoding again (``--cache-dir``)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class LatentCache:
    """Encoded clips on disk, one safetensors file per clip, keyed by everything that decides the
    result: the video file (path, size, modification time), the clip (start, frames, stride, size)
    and the encoder (``identity``: the base checkpoint). Files are written atomically, so an
    interrupted run leaves no half-written entry."""

    def __init__(self, folder, identity: str):
        self.folder = Path(folder)
        self.identity = identity

    def key(self, path, start: int, frames: int, stride: int, height: int, width: int,
            condition_frame: str = "clip") -> str:
        stat = os.stat(path)
        fields = [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, start, frames, stride, height, width,
                  self.identity, 1]
        if condition_frame != "clip":  # clip-conditioned entries keep the keys they always had
            fields.append(condition_frame)
        payload = json.dumps(fields)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def file(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> dict | None:
        """The entry's tensors, plus ``fps`` and ``motion_score`` where the entry recorded them (the
        reader supplies defaults for the rest)."""
        from safetensors import safe_open

        path = self.file(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                entry = {name: fh.get_tensor(name) for name in fh.keys()}
                meta = fh.metadata() or {}
        except Exception:
            return None  # unreadable entries are simply encoded again
        entry.update({name: float(meta[name]) for name in ("fps", "motion_score") if name in meta})
        return entry

    def save(self, key: str, tensors: dict[str, torch.Tensor], fps: float, score: float) -> None:
        from longvid_core.weights.checkpoint_io import atomic_save_safetensors

        atomic_save_safetensors({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, self.file(key),
                                metadata={"fps": repr(float(fps)), "motion_score": repr(float(score))})


__all__ = ["LatentCache"]
