"""Seconds per denoiser call and peak memory of the full-size SVD-XT UNet on one GPU, no download.

    python bench/bench_gpu.py           # one GPU, random full-size weights in the real layout, < 5 min
    python bench/bench_gpu.py --tiny    # the same code at a tiny size on the CPU (the tests run it)

The UNet is built from the released svd_xt.safetensors' tensor names and shapes
(tests/data/svd_xt_keys_shapes.txt) with random weights: speed and memory do not depend on the
values. One denoiser call holds the rolling window (window 24 + chunk 2 = 26 frames) with
classifier-free guidance (batch 2), at 512x512 and 1024x576, in fp16 and bf16; then ExVideo's 128
frames at 512x512. Beside each: SDPA vs xformers, torch.compile, a deep-cache call (only the outer
blocks), and diffusers' own SVD UNet with the same weights as the ratio. Last, the peak memory of
the streaming decode (SVD's temporal VAE, random weights). Every line says what it measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longvid_core.networks.compile import compile_unet  # noqa: E402
from longvid_core.networks.decoding import StreamingDecoder  # noqa: E402

SIZES = {"full": [(512, 512), (1024, 576)], "tiny": [(32, 32), (64, 32)]}
WINDOW_FRAMES = {"full": 26, "tiny": 6}  # window 24 + chunk 2 at full size
EXVIDEO_FRAMES = {"full": 128, "tiny": 8}


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else "n/a (CPU)"


def seconds_per_call(fn, device, repeats: int) -> float:
    fn()  # warm-up: kernels chosen, compiled graphs built
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_unet(scale: str, dtype, device, exvideo_frames: int | None = None):
    """LongVid's UNet at full (SVD-XT layout) or tiny size, random weights, eval, on ``device``."""
    from training import memory

    config = memory.full_size_config() if scale == "full" else dict(memory.tiny_plan().config)
    precision = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype]
    unet, _ = memory.build_unet(config, "exvideo" if exvideo_frames else "full", exvideo_frames or 0,
                                precision=precision, trained_dtype_prefix="\0")  # nothing kept in fp32
    unet.requires_grad_(False)
    # nn.Module.to, not ModelMixin.to: the latter warns about fp32-kept modules SVD has none of
    return torch.nn.Module.to(unet.eval(), device=device, dtype=dtype), config


def call_inputs(unet, frames: int, width: int, height: int, device, dtype):
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(2, frames, unet.config.in_channels, height // 8, width // 8, generator=gen)
    context = torch.randn(2, 1, unet.config.cross_attention_dim, generator=gen)
    time_ids = torch.tensor([[5.0, 127.0, 0.02]] * 2)
    timestep = torch.linspace(-1.5, 1.5, 2 * frames).reshape(2, frames)  # a noise level per frame
    return [t.to(device=device, dtype=dtype) for t in (sample, timestep, context, time_ids)]


def time_unet(unet, inputs, device, repeats, **options) -> tuple[float, str]:
    reset_peak(device)
    with torch.no_grad():
        seconds = seconds_per_call(lambda: unet(*inputs, **options), device, repeats)
    return seconds, peak_gib(device)


def row(what: str, seconds: float | None, memory: str, note: str = "") -> str:
    timing = f"{seconds * 1e3:9.1f} ms" if seconds is not None else "        n/a"
    return f"{what:<58} {timing}  {memory:>12}  {note}"


def bench_window(scale, dtype, device, repeats, lines):
    from diffusers import UNetSpatioTemporalConditionModel

    unet, config = build_unet(scale, dtype, device)
    reference = torch.nn.Module.to(UNetSpatioTemporalConditionModel(**config).eval(), device=device, dtype=dtype)
    reference.load_state_dict(unet.state_dict())
    name = str(dtype).replace("torch.", "")
    for width, height in SIZES[scale]:
        inputs = call_inputs(unet, WINDOW_FRAMES[scale], width, height, device, dtype)
        label = f"{width}x{height} x {WINDOW_FRAMES[scale]} frames, batch 2, {name}"
        ours, memory = time_unet(unet, inputs, device, repeats)
        # diffusers takes one timestep per video: the same cost, one noise level
        ref_inputs = [inputs[0], inputs[1][:, 0], inputs[2], inputs[3]]
        theirs, _ = time_unet(reference, ref_inputs, device, repeats)
        lines.append(row(f"{label}, SDPA", ours, memory, f"diffusers' UNet {theirs * 1e3:.1f} ms: "
                                                           f"ratio {ours / theirs:.2f}"))
        with torch.no_grad():
            _, deep = unet(*inputs, keep_deep_features=True)
        cached, cached_memory = time_unet(unet, inputs, device, repeats, deep_features=deep)
        lines.append(row(f"{label}, deep-cache call", cached, cached_memory, f"ratio to full {cached / ours:.2f}"))
        del deep
        try:
            unet.set_attention_backend("xformers")
            fast, fast_memory = time_unet(unet, inputs, device, repeats)
            lines.append(row(f"{label}, xformers", fast, fast_memory, f"ratio to SDPA {fast / ours:.2f}"))
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            lines.append(row(f"{label}, xformers", None, "", f"not run: {str(exc).splitlines()[0][:60]}"))
        unet.set_attention_backend("sdpa")
    del reference
    return unet


def bench_compile(unet, scale, dtype, device, repeats, lines):
    width, height = SIZES[scale][0]
    inputs = call_inputs(unet, WINDOW_FRAMES[scale], width, height, device, dtype)
    plain, _ = time_unet(unet, inputs, device, repeats)
    start = time.perf_counter()
    compile_unet(unet, "inductor" if device.type == "cuda" else "eager")
    with torch.no_grad():
        unet(*inputs)  # the compile itself
    synchronize(device)
    build = time.perf_counter() - start
    compiled, memory = time_unet(unet, inputs, device, repeats)
    note = (f"uncompiled {plain * 1e3:.1f} ms: ratio {compiled / plain:.2f}; compiling took {build:.0f} s"
            if unet.compile_problem is None else f"fell back: {unet.compile_problem[:70]}")
    lines.append(row(f"{width}x{height} x {WINDOW_FRAMES[scale]} frames, {str(dtype)[6:]}, torch.compile", compiled,
                     memory,
                     note))


def bench_exvideo(scale, dtype, device, repeats, lines):
    frames = EXVIDEO_FRAMES[scale]
    unet, _ = build_unet(scale, dtype, device, exvideo_frames=frames)
    width, height = SIZES[scale][0]
    inputs = call_inputs(unet, frames, width, height, device, dtype)
    seconds, memory = time_unet(unet, inputs, device, repeats)
    lines.append(row(f"ExVideo {width}x{height} x {frames} frames, batch 2, {str(dtype)[6:]}", seconds, memory,
                     "one pass, the whole clip"))


def bench_decode(scale, dtype, device, lines):
    from longvid_core.evaluation.tiny import TINY_VAE
    from longvid_core.networks import vae as vae_lib
    from longvid_core.weights.keymaps import sgm_vae
    from training import memory

    config = sgm_vae.config_from_shapes(memory.released_shapes(sgm_vae.PREFIX)) if scale == "full" else TINY_VAE
    with torch.device("meta"):
        vae = vae_lib.build_vae(config)
    vae = torch.nn.Module.to(vae.to_empty(device=device), dtype).eval()
    with torch.no_grad():  # finite values of a sane scale: speed and memory need no more
        for name, param in vae.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:
                param.normal_(0.0, 1.0 / param[0].numel() ** 0.5)
        for buf in vae.buffers():
            buf.zero_()
    width, height = SIZES[scale][-1]
    frames = 40
    latents = torch.randn(1, frames, 4, height // 8, width // 8, device=device, dtype=dtype)
    reset_peak(device)
    decoder = StreamingDecoder(vae, output_device="cpu")
    start = time.perf_counter()
    with torch.no_grad():
        for k in range(frames):
            decoder.push(latents[:, k])
        decoder.finish()
    synchronize(device)
    seconds = (time.perf_counter() - start) / frames
    lines.append(row(f"streaming decode {width}x{height}, window {decoder.window}, overlap {decoder.overlap}, "
                     f"{str(dtype)[6:]}", seconds, peak_gib(device), f"per frame; {frames} frames, memory flat"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (what the tests run)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    scale = "tiny" if args.tiny else "full"
    if scale == "full" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here; run on a GPU machine, or pass --tiny for the CPU check", file=sys.stderr)
        return 2
    device = torch.device("cuda" if scale == "full" else "cpu")
    dtypes = [torch.float16, torch.bfloat16] if device.type == "cuda" else [torch.float32, torch.bfloat16]
    started = time.perf_counter()
    lines = [f"bench_gpu ({scale}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
             f"torch {torch.__version__}): median of {args.repeats} calls after a warm-up",
             f"{'what':<58} {'per call':>12}  {'peak memory':>12}  note"]
    for dtype in dtypes:
        unet = bench_window(scale, dtype, device, args.repeats, lines)
        if dtype == dtypes[0]:
            bench_compile(unet, scale, dtype, device, args.repeats, lines)
        del unet
    bench_exvideo(scale, dtypes[0], device, args.repeats, lines)
    bench_decode(scale, dtypes[0], device, lines)
    lines.append(f"total {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
