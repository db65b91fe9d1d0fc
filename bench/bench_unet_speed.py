"""LongVid's UNet forward time against diffusers' reference implementation (same weights).

LongVid's UNet runs diffusers' blocks with per-frame timestep embeddings and batch-sliced SDPA;
this checks that neither costs speed. Prints the ratio ours / diffusers per size (goal ≈ 1.0).

    python bench/bench_unet_speed.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import UNetSpatioTemporalConditionModel  # noqa: E402

from longvid_core.evaluation.tiny import TINY_UNET, tiny_unet  # noqa: E402


def _time_pair(fn_a, fn_b, repeats: int) -> tuple[float, float]:
    """Median times of two functions, calls interleaved so machine load hits both alike."""
    for _ in range(3):  # warm-up: oneDNN builds kernels per shape on first use
        fn_a()
        fn_b()
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((fn_a, a), (fn_b, b)):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def main() -> int:
    ours = tiny_unet()
    ours.set_attention_backend("sdpa")
    ref = UNetSpatioTemporalConditionModel(**TINY_UNET).eval()
    ref.load_state_dict(ours.state_dict())
    print(f"UNet forward, {sum(p.numel() for p in ours.parameters()):,} parameters, CPU, "
          f"{torch.get_num_threads()} threads, median of 7 interleaved runs")
    print(f"{'frames':>6} {'latent':>7} {'ours ms':>9} {'diffusers ms':>13} {'ratio':>6}")
    for frames, size in ((10, 8), (26, 8), (14, 16)):
        x = torch.randn(2, frames, 8, size, size)
        ctx = torch.randn(2, 1, TINY_UNET["cross_attention_dim"])
        ids = torch.tensor([[7.0, 127.0, 0.02]] * 2)
        t = torch.tensor([0.5, 0.5])
        with torch.no_grad():
            a, b = _time_pair(lambda: ours(x, t, ctx, ids), lambda: ref(x, t, ctx, ids), 7)
        print(f"{frames:>6} {size:>5}x{size:<1} {a * 1e3:>9.1f} {b * 1e3:>13.1f} {a / b:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
