"""The small model's training data: random synthetic shape scenes written as H.264 mp4 files with
``metadata.json`` (``recipe.sh`` runs ``python tools/small_model/write_dataset.py FOLDER``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from anywhere, like the other tools

from longvid_core.evaluation.synthetic import random_scene, render  # noqa: E402
from longvid_core.run.video_io import VideoWriter  # noqa: E402


def write_dataset(folder, videos: int, frames: int, size: int = 64, fps: int = 8, seed: int = 0) -> list:
    """Write ``videos`` random scenes as mp4 files (H.264) plus ``metadata.json``; returns paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths, meta = [], []
    for v in range(videos):
        scene = random_scene(seed * 100_003 + v, size, size)
        path = folder / f"shapes_{v:05d}.mp4"
        with VideoWriter(path, fps, crf=12) as writer:
            writer.write(render(scene, frames))
        paths.append(path)
        meta.append({"path": path.name, "fps": fps, "caption": ", ".join(f"{s.kind}" for s in scene.shapes)})
    (folder / "metadata.json").write_text(json.dumps(meta, indent=1))
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--videos", type=int, default=2000)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    write_dataset(args.folder, args.videos, args.frames, size=args.size, fps=args.fps, seed=args.seed)
