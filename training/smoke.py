"""``python -m training.smoke``: the whole trainer on a CPU in under a minute, no downloads.

Writes a tiny random SVD (``longvid_core.evaluation.tiny``) as an SGM single file and a few synthetic videos
(real .mp4/.webm files encoded with PyAV: a bright square moving over a colour gradient), then runs
``training/train.py`` for a few ExVideo steps and checks that the saved extension loads with
``load_svd(base, extension=...)``. The tests use the same helpers.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CODECS = {".mp4": "libx264", ".mov": "libx264", ".webm": "libvpx-vp9"}


def synthetic_frames(frames: int, height: int, width: int, seed: int = 0):
    """``uint8 [frames, height, width, 3]``: a square moving across a gradient (clear, learnable motion)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 200, size=3)
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([base[c] + 40 * (xs / width if c % 2 else ys / height) for c in range(3)], axis=-1)
    side = max(2, min(height, width) // 3)
    speed = rng.integers(1, 3)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        image = background.copy()
        x = (t * speed) % max(1, width - side)
        y = (height - side) // 2
        image[y:y + side, x:x + side] = 255 - base
        out[t] = np.clip(image, 0, 255).astype(np.uint8)
    return out


def write_synthetic_video(path, frames: int = 24, height: int = 32, width: int = 32, fps: int = 12, seed: int = 0,
                          keyframe_interval: int = 0):
    """Encode :func:`synthetic_frames` to ``path`` (.mp4/.mov: H.264, .webm: VP9) with PyAV;
    ``keyframe_interval`` > 0: a keyframe at least every so many frames (else the codec's default)."""
    import av

    path = Path(path)
    codec = CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"{path}: expected a .mp4, .mov or .webm name; found {path.suffix}")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if keyframe_interval > 0:
            stream.codec_context.gop_size = keyframe_interval
        for image in synthetic_frames(frames, height, width, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_tiny_base(path, seed: int = 0):
    """A tiny random SVD in the SGM single-file layout, loadable with ``load_svd``."""
    from longvid_core import save_svd
    from longvid_core.evaluation.tiny import tiny_svd

    return save_svd(tiny_svd(seed), path)


def smoke_args(base, data_dir, output_dir, *extra: str) -> list[str]:
    """Trainer flags for a seconds-long CPU run on the tiny model."""
    return [
        "--base", str(base), "--data-dir", str(data_dir), "--output-dir", str(output_dir),
        "--mode", "exvideo", "--exvideo-frames", "8", "--frames", "4", "--height", "16", "--width", "16",
        "--precision", "fp32", "--cpu", "--num-workers", "0", "--learning-rate", "1e-3", "--batch-size", "1",
        "--max-steps", "4", "--save-every", "2", "--log-every", "1", "--ema-decay", "0.9", *extra,
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.smoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", default="", help="write everything here instead of a temporary folder")
    args = parser.parse_args(argv)
    from training import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        data_dir = root / "videos"
        data_dir.mkdir(parents=True, exist_ok=True)
        for number, suffix in enumerate((".mp4", ".webm", ".mov")):
            write_synthetic_video(data_dir / f"clip{number}{suffix}", frames=12, seed=number)
        base = write_tiny_base(root / "svd_tiny.safetensors")
        code = train.main(smoke_args(base, data_dir, root / "run"))
        if code:
            return code
        from longvid_core import load_svd
        from training.checkpointing import latest_checkpoint

        checkpoint = latest_checkpoint(root / "run" / "checkpoints")
        model = load_svd(base, extension=checkpoint / "extension.safetensors")
        print(f"smoke run OK: {checkpoint.name}/extension.safetensors loads "
              f"({sum(p.numel() for p in model.unet.parameters()):,} UNet parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
