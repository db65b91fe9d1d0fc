"""Benchmark of the samplers' cost and memory (not a test; CPU, well under two minutes).

    python bench/bench_sampler.py

1. Frame-evaluations per output frame, as a ratio to the step count S, for the progressive
   sampler (PA-VDM) at its default layout and for the reference samplers. Counted by a denoiser
   that counts the frames it is given (per batch item, guidance on, so the real code path runs)
   and checked against the samplers' plans. Goal for the progressive default: <= 1.1 x S.
2. Peak memory of streaming progressive sampling at N = 64 vs N = 1024 frames. Each run is a
   fresh single-threaded subprocess with a trivial denoiser on a 4x64x64 latent (64 KiB a frame;
   the window's buffers, tens of MiB, dominate). Reported: the peak RSS while sampling above the
   RSS just before it (Linux VmHWM, reset through /proc/self/clear_refs so that the import-time
   peak does not hide anything). Goal: ratio <= 1.1. The headline runs pin glibc's mmap threshold
   (MALLOC_MMAP_THRESHOLD_) so that freed window buffers go back to the OS and RSS follows the
   live tensors; with the allocator's defaults RSS also wanders with heap fragmentation, and the
   peak of that wandering is reported as well. A run whose consumer keeps every frame is shown
   for contrast: it must grow with N, which shows the measurement can see growth. The same runs
   with a strength-1 guide every 48 frames (keyframes) and with every frame guided at 0.5 (a
   refine) show what guides add: their latents are the run's input and exist before sampling (in
   the baseline); the sampler's own memory must stay flat.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.append(_ROOT)  # appended, so an explicit PYTHONPATH still wins

from longvid_core.networks.conditioning import SVDCond  # noqa: E402
from longvid_core.sampling import (  # noqa: E402
    iter_full_sequence,
    iter_progressive,
    iter_replacement,
    plan_full_sequence,
    plan_progressive,
    plan_replacement,
)
from longvid_core.sampling.schedules import DEFAULT_CHUNK, DEFAULT_STEPS, DEFAULT_WINDOW, get_sigmas_karras  # noqa: E402

MEMORY_FRAME = (1, 4, 64, 64)


def make_cond(height: int, width: int) -> SVDCond:
    return SVDCond(torch.ones(1, 1, 1024), torch.ones(1, 4, height, width), torch.tensor([[5.0, 127.0, 0.0]]))


class CountingDenoiser:
    def __init__(self):
        self.calls = 0
        self.frame_evaluations = 0

    def __call__(self, x, sigma, cond):
        self.calls += 1
        self.frame_evaluations += x.shape[1]
        return torch.zeros_like(x)


def evaluations_per_frame() -> None:
    steps = DEFAULT_STEPS
    frame = (1, 4, 8, 8)
    cond = make_cond(8, 8)
    sigmas = get_sigmas_karras(steps)
    runs = [
        (f"progressive F={DEFAULT_WINDOW} C={DEFAULT_CHUNK} (default)", 1024, iter_progressive, {}, plan_progressive),
        (f"progressive F={DEFAULT_WINDOW} C={DEFAULT_CHUNK} (default)", 128, iter_progressive, {}, plan_progressive),
        ("progressive F=24 C=2, S=48 (d=4)", 1024, iter_progressive, {}, plan_progressive),
        ("replacement w/o noise, window 26, E=2", 1024, iter_replacement,
         dict(window=26, condition_frames=2), plan_replacement),
        ("replacement w/ noise,  window 26, E=2", 1024, iter_replacement,
         dict(window=26, condition_frames=2, renoise_condition=True), plan_replacement),
        ("replacement w/o noise, window 25, E=1", 1024, iter_replacement,
         dict(window=25, condition_frames=1), plan_replacement),
        ("replacement w/o noise, window 25, E=8", 1024, iter_replacement,
         dict(window=25, condition_frames=8), plan_replacement),
        ("full-sequence (one clip)", 25, iter_full_sequence, {}, plan_full_sequence),
    ]
    print("1. Frame-evaluations per output frame (ratio to S; goal for the progressive default <= 1.1)")
    print(f"   {'sampler':40s} {'N':>5s} {'S':>3s} {'calls':>6s} {'evals/frame':>11s} {'/S':>6s} {'time':>6s}")
    for name, frames, iterate, kwargs, plan_fn in runs:
        run_steps = 48 if "S=48" in name else steps
        run_sigmas = get_sigmas_karras(run_steps) if run_steps != steps else sigmas
        denoiser = CountingDenoiser()
        start = time.perf_counter()
        produced = sum(1 for _ in iterate(denoiser, cond, frames, frame, run_sigmas, **kwargs))
        elapsed = time.perf_counter() - start
        plan = plan_fn(frames, steps=run_steps, **{k: v for k, v in kwargs.items() if k != "renoise_condition"})
        assert produced == frames, (name, produced)
        assert (denoiser.calls, denoiser.frame_evaluations) == (plan.denoiser_calls, plan.frame_evaluations), name
        per_frame = denoiser.frame_evaluations / frames
        print(f"   {name:40s} {frames:5d} {run_steps:3d} {denoiser.calls:6d} {per_frame:11.2f} "
              f"{per_frame / run_steps:6.3f} {elapsed:5.1f}s")
    limit = plan_progressive(10**7)
    print(f"   progressive default as N -> infinity: {limit.evaluations_per_frame / limit.steps:.4f} x S "
          f"(= (F + C) / F = {(DEFAULT_WINDOW + DEFAULT_CHUNK) / DEFAULT_WINDOW:.4f})")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}; this measurement needs Linux")


def memory_guides(frames: int, kind: str) -> list:
    """``keyframes``: a strength-1 guide every 48 frames; ``refine``: every frame at 0.5."""
    from longvid_core.sampling import Guide

    latent = lambda k: torch.full(MEMORY_FRAME, k / frames)  # noqa: E731
    if kind == "keyframes":
        return [Guide(k, latent(k)) for k in range(47, frames, 48)]
    if kind == "refine":
        return [Guide(k, latent(k), 0.5) for k in range(frames)]
    return []


def child(frames: int, collect: bool, guides_kind: str = "") -> None:
    """One measured run (in a fresh process): print peak RSS above the pre-sampling RSS."""
    # One thread: glibc gives each allocating thread its own arena, which adds allocator noise.
    torch.set_num_threads(1)
    cond = make_cond(*MEMORY_FRAME[2:])
    sigmas = get_sigmas_karras(DEFAULT_STEPS)
    guides = memory_guides(frames, guides_kind)  # the run's input: before the baseline
    denoise = lambda x, sigma, c: torch.zeros_like(x)  # noqa: E731
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    baseline_kib = _status_kib("VmRSS")
    start = time.perf_counter()
    kept = []
    after_64_kib = None
    for done, (_, latent) in enumerate(iter_progressive(denoise, cond, frames, MEMORY_FRAME, sigmas, guides=guides),
                                       start=1):
        if collect:
            kept.append(latent.clone())
        if done == 64:
            after_64_kib = _status_kib("VmHWM")
    elapsed = time.perf_counter() - start
    peak_kib = _status_kib("VmHWM")
    print(json.dumps(dict(frames=frames, collect=collect, above_baseline_mib=(peak_kib - baseline_kib) / 1024,
                          after_64_mib=(after_64_kib - baseline_kib) / 1024, baseline_mib=baseline_kib / 1024,
                          seconds=elapsed)))


def run_child(frames: int, collect: bool = False, pin_mmap_threshold: bool = True, guides_kind: str = "") -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", str(frames)] + (["--collect"] if collect else [])
    command += ["--guides", guides_kind] if guides_kind else []
    env = dict(os.environ)
    if pin_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(64 * 1024)
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


def peak_memory() -> None:
    frame_mib = torch.Size(MEMORY_FRAME).numel() * 4 / 2**20
    print(f"\n2. Peak memory, streaming progressive sampling (default layout, guidance on, latent "
          f"{'x'.join(map(str, MEMORY_FRAME))} = {frame_mib * 1024:.0f} KiB a frame; fresh process per run)")
    for pinned, label in ((True, "mmap threshold pinned (RSS follows live tensors)"), (False, "allocator defaults")):
        print(f"   {label}:")
        small, large = run_child(64, pin_mmap_threshold=pinned), run_child(1024, pin_mmap_threshold=pinned)
        for run in (small, large):
            print(f"     N = {run['frames']:5d}: peak {run['above_baseline_mib']:6.1f} MiB above the pre-sampling RSS "
                  f"of {run['baseline_mib']:.0f} MiB ({run['after_64_mib']:.1f} MiB after 64 frames; "
                  f"{run['seconds']:.1f}s)")
        ratio = large["above_baseline_mib"] / small["above_baseline_mib"]
        verdict = "met" if ratio <= 1.1 else "NOT met"
        if pinned:
            print(f"     ratio N=1024 / N=64: {ratio:.3f}  (goal <= 1.1: {verdict})")
        else:
            print(f"     ratio N=1024 / N=64: {ratio:.3f}  (<= 1.1: {verdict}; varies run to run with heap "
                  f"fragmentation, a longer run samples more of it)")
    for kind, label in (("keyframes", "a strength-1 guide every 48 frames"),
                        ("refine", "every frame guided at strength 0.5 (a refine)")):
        small, large = run_child(64, guides_kind=kind), run_child(1024, guides_kind=kind)
        ratio = large["above_baseline_mib"] / small["above_baseline_mib"]
        print(f"   with {label}, mmap threshold pinned: N = 64 {small['above_baseline_mib']:.1f} MiB, N = 1024 "
              f"{large['above_baseline_mib']:.1f} MiB above the pre-sampling RSS (which holds the guides' latents, the "
              f"run's input); "
              f"ratio {ratio:.3f}  (goal <= 1.1: {'met' if ratio <= 1.1 else 'NOT met'})")
    kept = run_child(1024, collect=True)
    print(f"   contrast, N = 1024 with the consumer keeping every frame ({1024 * frame_mib:.0f} MiB of output): "
          f"peak {kept['above_baseline_mib']:.1f} MiB above the pre-sampling RSS")


def main() -> None:
    torch.set_num_threads(2)
    start = time.perf_counter()
    evaluations_per_frame()
    peak_memory()
    print(f"\ntotal {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    if "--child" in sys.argv:
        kind = sys.argv[sys.argv.index("--guides") + 1] if "--guides" in sys.argv else ""
        child(int(sys.argv[sys.argv.index("--child") + 1]), "--collect" in sys.argv, kind)
    else:
        main()
