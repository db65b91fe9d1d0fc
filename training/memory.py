"""Memory of a training step: measured on the full-size SVD-XT UNet on the CPU, predicted for a GPU.

    python -m training.memory --full-size     # measure (16 min on 2 cores, 10.3 GiB RAM), write the fit
    python -m training.memory                 # the same at the tiny test config (seconds)
    python training/train.py --estimate-memory --mode exvideo --frames 128 ...   # predict only

The UNet is built in the released layout (tensor names and shapes of ``svd_xt.safetensors``, read
from ``tests/data/svd_xt_keys_shapes.txt``) with random weights, extended by ExVideo or given LoRA
adapters like the trainer does, and trained for real steps (EDM preconditioning + UNet, x0 loss,
backward, AdamW) at small latents. What is measured and how:

- weights: bytes of every parameter's storage as built (frozen in bf16, trained in fp32, as
  ``training/model_setup.py`` keeps them);
- gradients and optimizer states: bytes of the real ``.grad`` tensors and ``optimizer.state`` of a
  subset of the trained parameters (all of them where that fits this machine); the rest of the
  gradients are dropped as soon as autograd produces them and counted at fp32 size at that moment;
- activations: the peak of live tensor bytes during forward + backward, read from torch's CPU
  allocator events (``torch.profiler`` with ``profile_memory``: every allocation and free), without
  the gradients and the autocast low-precision copies of fp32 trained weights (both computed from
  parameter counts and added back in the prediction). This is what ``torch.cuda.max_memory_allocated``
  counts on a GPU, without the allocator's slack.

The prediction adds all gradients to the activation peak, although the peak comes early in the
backward pass when few gradients exist yet: an upper bound. Each step also records the measured
peak with the gradients counted as they arrive, so the bound's slack is shown.

The activation term of each phase (forward, backward) is fitted per trained set and checkpointing
setting as ``a + b * latent pixels x frames x batch + c * latent pixels x batch`` (exactly through
three sizes that vary frames and pixels; see :func:`fit_activations`); everything else is computed
from parameter counts at the byte sizes measured. Every printed figure says which it is.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEYS_SHAPES = REPO / "tests" / "data" / "svd_xt_keys_shapes.txt"
COEFFICIENTS = Path(__file__).resolve().with_name("memory_coefficients.json")
GIB = 2**30

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_RANK = 16
PARAMETER_SETS = ("exvideo", "lora", "full")
# bytes per element of frozen weights and activations under --precision (autocast dtype)
PRECISION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# 8-bit AdamW (bitsandbytes / torchao): two uint8 moments and one fp32 scale per block of 256 each
EIGHT_BIT_STATE_BYTES = 2 + 2 * 4 / 256
# the CUDA context and kernels take this much of a card outside torch's allocator (typical, not measured)
CUDA_CONTEXT_BYTES = int(0.75 * GIB)
# the allocator's caching and fragmentation: a prediction "fits" when it leaves this share free
FIT_MARGIN = 0.05
_VIRTUAL_GRAD = "longvid.memory.grad_bytes="
_PHASE = "longvid.memory.phase="


# ---------------------------------------------------------------------------------------------
# Sizes and settings


@dataclass(frozen=True)
class Size:
    """A training clip in latent space (pixels / 8)."""

    height: int
    width: int
    frames: int
    batch: int = 1

    @property
    def units(self) -> int:
        return self.height * self.width * self.frames * self.batch

    def label(self) -> str:
        return f"{self.height}x{self.width} latent x {self.frames} frames x batch {self.batch}"


@dataclass(frozen=True)
class Plan:
    """What a measurement run builds and which sizes it steps at."""

    name: str
    config: dict
    exvideo_frames: int
    sizes: tuple[Size, ...]  # with gradient checkpointing (what training uses)
    sizes_without_checkpointing: tuple[Size, ...]
    progressive_size: Size
    fp32_size: Size
    # parameters whose gradients and optimizer states are kept for real (name prefix)
    kept_prefix: str


def full_size_config() -> dict:
    """SVD-XT's UNet config, read from the released file's tensor names and shapes."""
    from longvid_core.weights.keymaps import sgm_unet

    return sgm_unet.config_from_shapes(released_shapes(sgm_unet.PREFIX))


def released_shapes(prefix: str = "") -> dict[str, tuple]:
    """Names and shapes of the released svd_xt.safetensors' tensors under ``prefix`` (prefix cut),
    from tests/data/svd_xt_keys_shapes.txt (one ``name<TAB>shape`` per line)."""
    import ast

    out = {}
    for line in KEYS_SHAPES.read_text().splitlines():
        key, shape = line.split("\t")
        if key.startswith(prefix):
            out[key[len(prefix):]] = tuple(ast.literal_eval(shape))
    return out


def full_size_plan() -> Plan:
    # three latent sizes (units 1024, 2048, 4096); ExVideo's conv needs >= 2x2 at the mid block (1/8)
    sizes = (Size(16, 16, 4), Size(16, 16, 8), Size(32, 32, 4))
    return Plan("full-size SVD-XT", full_size_config(), 128, sizes, sizes[::2], Size(16, 16, 26), Size(16, 16, 4),
                "down_blocks.0.attentions.0.")


def tiny_plan() -> Plan:
    from longvid_core.evaluation.tiny import TINY_UNET

    sizes = (Size(4, 4, 4), Size(4, 4, 8), Size(8, 8, 4))
    return Plan("tiny", dict(TINY_UNET), 16, sizes, sizes[::2], Size(4, 4, 10), Size(4, 4, 4), "down_blocks.0.")


# ---------------------------------------------------------------------------------------------
# Building the model


def build_unet(config: dict, parameter_set: str, exvideo_frames: int, precision: str = "bf16",
               trained_dtype_prefix: str | None = None, seed: int = 0):
    """LongVid's UNet in the given config with random weights, set up as the trainer sets it up.

    Built on the meta device, then each parameter is created in its final dtype (frozen ones in
    ``precision``, trained ones in fp32) so that no fp32 copy of the whole model is ever held.
    ``full``: every weight is trained, but only those under ``trained_dtype_prefix`` get fp32
    masters here (the others stay in ``precision`` so the model fits this machine; their gradients
    are counted at fp32 size). Returns ``(unet, trainable)``.
    """
    import torch

    from longvid_core.networks import exvideo
    from longvid_core.networks.unet import LongVidUNet

    with torch.device("meta"):
        unet = LongVidUNet(**config)
        if parameter_set == "exvideo":
            exvideo.extend_unet(unet, exvideo_frames)
    names = set(exvideo.extension_parameters(unet)) if parameter_set == "exvideo" else set()
    low = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    gen = torch.Generator().manual_seed(seed)
    for name, param in list(unet.named_parameters()):
        if parameter_set == "full":
            fp32 = trained_dtype_prefix is None or name.startswith(trained_dtype_prefix)
        else:
            fp32 = name in names
        value = torch.empty(param.shape, dtype=torch.float32 if fp32 else low)
        _randomize_(value, name, gen)
        owner_name, _, leaf = name.rpartition(".")
        owner = unet.get_submodule(owner_name) if owner_name else unet
        owner._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    for name, buf in list(unet.named_buffers()):
        if buf.is_meta:
            owner_name, _, leaf = name.rpartition(".")
            owner = unet.get_submodule(owner_name) if owner_name else unet
            owner._buffers[leaf] = torch.zeros(buf.shape, dtype=buf.dtype)
    unet.set_attention_backend("sdpa")
    if parameter_set == "exvideo":
        trainable = exvideo.extension_parameters(unet)
    elif parameter_set == "lora":
        trainable = add_lora(unet, LORA_RANK)
    else:
        trainable = dict(unet.named_parameters())
    for p in trainable.values():
        p.requires_grad_(True)
    unet.train()
    return unet, trainable


def _randomize_(value, name: str, gen) -> None:
    # random values only need to be finite and of a sane scale: memory does not depend on them
    if value.dim() == 1 and "norm" in name and name.endswith("weight"):
        value.fill_(1.0)
    elif value.dim() == 1:
        value.zero_()
    else:
        fan_in = max(1, value[0].numel())
        value.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=gen)


def check_released_layout(unet, config: dict) -> int:
    """Raise unless ``unet``'s tensors are exactly the released UNet's (names and shapes, under
    LongVid's names); returns the number of tensors compared."""
    from longvid_core.weights.keymaps import sgm_unet

    released = sgm_unet.to_ours(released_shapes(sgm_unet.PREFIX), config)
    ours = {k: tuple(v.shape) for k, v in unet.state_dict().items()
            if "positional_" not in k and ".lora_" not in k and ".base_layer." not in k}
    released = {k: tuple(v) for k, v in released.items()}
    if ours != released:
        diff = sorted(set(ours) ^ set(released))[:5] or [k for k in ours if ours[k] != released.get(k)][:5]
        raise RuntimeError(f"the built UNet does not have the released layout; differing tensors: {diff}")
    return len(ours)


def add_lora(unet, rank: int) -> dict:
    """LoRA adapters (fp32) on every attention projection of ``unet`` (:data:`LORA_TARGETS`), with
    peft where installed (as ``--mode lora`` trains), else a minimal adapter of the same shapes.
    Returns the adapter parameters by name."""
    import torch

    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        inject_adapter_in_model = None
    if inject_adapter_in_model is not None:
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(LORA_TARGETS)), unet)
    else:
        for name, module in list(unet.named_modules()):
            if isinstance(module, torch.nn.Linear) and _is_lora_target(name):
                owner_name, _, leaf = name.rpartition(".")
                setattr(unet.get_submodule(owner_name), leaf, _minimal_lora(module, rank))
    adapters = {}
    for name, param in unet.named_parameters():
        if ".lora_" in name:
            param.data = param.data.to(torch.float32)
            adapters[name] = param
    return adapters


def _is_lora_target(name: str) -> bool:
    return any(name == t or name.endswith("." + t) for t in LORA_TARGETS)


def lora_parameter_count(unet, rank: int) -> int:
    """rank x (in + out) over every attention projection (what a LoRA of that rank trains)."""
    import torch

    # after LoRA is added the projection itself is ``<target>.base_layer``
    return sum(rank * (m.in_features + m.out_features) for name, m in unet.named_modules()
               if isinstance(m, torch.nn.Linear) and _is_lora_target(name.removesuffix(".base_layer")))


@functools.cache
def _minimal_lora_class():
    import torch

    class MinimalLoRA(torch.nn.Module):
        def __init__(self, base: torch.nn.Linear, rank: int):
            super().__init__()
            self.base_layer = base
            self.lora_A = torch.nn.Linear(base.in_features, rank, bias=False)
            self.lora_B = torch.nn.Linear(rank, base.out_features, bias=False)
            torch.nn.init.zeros_(self.lora_B.weight)

        def forward(self, x):
            return self.base_layer(x) + self.lora_B(self.lora_A(x))

    return MinimalLoRA


def _minimal_lora(base, rank: int):
    # the class is made on first use so that importing this module (for --estimate-memory) needs no torch
    return _minimal_lora_class()(base, rank)


# ---------------------------------------------------------------------------------------------
# Measuring


def peak_live_bytes(fn) -> tuple[dict[str, tuple[int, int]], object]:
    """Run ``fn()`` and return ``(peaks, result)``. ``peaks[phase] = (peak, peak_with_announced)``:
    the largest number of tensor bytes live at any moment of that phase above what was live when
    ``fn`` started, from torch's CPU allocation events; the second also counts the gradients
    announced by :func:`_announce_gradient` from the moment autograd produced them. Phases start at
    :func:`mark_phase` calls (the first is ``"start"``); ``peaks["all"]`` covers the whole run."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, "alloc", node.extra_fields.alloc_size))
        elif node.name.startswith(_VIRTUAL_GRAD):
            events.append((node.start_time_ns, "grad", int(node.name[len(_VIRTUAL_GRAD):])))
        elif node.name.startswith(_PHASE):
            events.append((node.start_time_ns, "phase", node.name[len(_PHASE):]))
        stack.extend(node.children)
    if not any(kind == "alloc" and size > 0 for _, kind, size in events):
        raise RuntimeError("torch's profiler reported no allocations; this torch cannot measure CPU memory")
    live = announced = 0
    phase = "start"
    peaks = {"all": (0, 0), phase: (0, 0)}
    for _, kind, value in sorted(events, key=lambda e: e[0]):
        if kind == "phase":
            phase = value
            peaks.setdefault(phase, (0, 0))
            continue
        if kind == "grad":
            announced += value
        else:
            live += value
        for key in ("all", phase):
            peaks[key] = (max(peaks[key][0], live), max(peaks[key][1], live + announced))
    return peaks, result


def mark_phase(name: str) -> None:
    """Start a new phase of :func:`peak_live_bytes` (e.g. the backward pass)."""
    from torch.profiler import record_function

    with record_function(_PHASE + name):
        pass


def _announce_gradient(param) -> None:
    """Drop a gradient autograd just produced, announcing its fp32 size to :func:`peak_live_bytes`."""
    from torch.profiler import record_function

    with record_function(f"{_VIRTUAL_GRAD}{param.numel() * 4}"):
        pass
    param.grad = None


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class StepMeasurement:
    mode: str
    size: Size
    checkpointing: bool
    precision: str
    parameters: int
    trainable: int
    weights_bytes: int  # measured: storage of every parameter
    fp32_trained_in_run: int  # trained parameters held in fp32 in this run (their autocast copies)
    grads_measured_params: int
    grads_measured_bytes: int  # measured: real .grad tensors
    grads_counted_bytes: int  # computed: fp32 size of the gradients dropped on arrival
    optimizer_measured_params: int
    optimizer_measured_bytes: int  # measured: AdamW state tensors of the kept subset
    optimizer_step_extra_bytes: int  # measured: peak extra during optimizer.step of the kept subset
    forward_peak_bytes: int  # measured: peak live bytes during the forward pass and loss
    backward_peak_bytes: int  # measured: peak during the backward pass (dropped gradients not counted)
    backward_peak_with_grads_bytes: int  # measured: the same with every gradient counted at fp32 on arrival
    forward_activation_bytes: int  # derived: forward peak - autocast copies of fp32 trained weights
    backward_activation_bytes: int  # derived: backward peak - the kept (real) gradients
    seconds: float
    lora_backend: str = ""


def training_step_inputs(size: Size, config: dict, progressive: bool, gen):
    """Noisy latents, clean targets, per-video or per-frame sigma and SVD's conditioning."""
    import torch

    from longvid_core.networks.conditioning import SVDCond

    b, f, h, w = size.batch, size.frames, size.height, size.width
    channels = config["out_channels"]
    x0 = torch.randn(b, f, channels, h, w, generator=gen)
    sigma = torch.exp(0.7 + 1.6 * torch.randn((b, f) if progressive else (b,), generator=gen))
    noise = torch.randn(b, f, channels, h, w, generator=gen)
    shaped = sigma.reshape(b, f if progressive else 1, 1, 1, 1)
    cond = SVDCond(
        image_embeds=torch.randn(b, 1, config["cross_attention_dim"], generator=gen),
        concat_latent=torch.randn(b, config["in_channels"] - channels, h, w, generator=gen),
        added_time_ids=torch.tensor([[6.0, 127.0, 0.0]] * b),
    )
    return x0 + shaped * noise, x0, sigma, cond


def measure_step(unet, trainable: dict, mode: str, size: Size, checkpointing: bool, precision: str,
                 kept_prefix: str, config: dict, seed: int = 0) -> StepMeasurement:
    """One real training step of ``unet`` at ``size``, measured (see the module doc)."""
    import torch

    from longvid_core.networks.denoiser import svd_denoise

    progressive = "progressive" in mode
    kept = {n: p for n, p in trainable.items() if n.startswith(kept_prefix) or ".lora_" in n}
    if not kept:
        raise ValueError(f"no trained parameter starts with {kept_prefix!r}")
    handles = [p.register_post_accumulate_grad_hook(_announce_gradient)
               for n, p in trainable.items() if n not in kept]
    if checkpointing:
        unet.enable_gradient_checkpointing()
    else:
        unet.disable_gradient_checkpointing()
    gen = torch.Generator().manual_seed(seed)
    x, x0, sigma, cond = training_step_inputs(size, config, progressive, gen)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision != "fp32")
    started = time.perf_counter()

    def forward_backward():
        mark_phase("forward")
        with autocast:
            denoised = svd_denoise(unet, x, sigma, cond)
        loss = (denoised.float() - x0).square().mean()
        mark_phase("backward")
        loss.backward()
        return loss.detach()

    try:
        peaks, loss = peak_live_bytes(forward_backward)
    finally:
        for handle in handles:
            handle.remove()
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the {mode} step at {size.label()} gave a loss of {loss.item()}")
    grads = [p.grad for p in kept.values() if p.grad is not None]
    grads_measured = tensor_bytes(grads)
    grads_counted = sum(4 * p.numel() for n, p in trainable.items() if n not in kept)
    optimizer = torch.optim.AdamW(list(kept.values()), lr=1e-5, foreach=True)  # foreach: torch's GPU default
    step_peaks, _ = peak_live_bytes(optimizer.step)
    step_extra = step_peaks["all"][0]
    states = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    optimizer_bytes = tensor_bytes(states)
    # the step's own extra includes the states it created; keep only the transient part
    step_extra = max(0, step_extra - optimizer_bytes)
    for p in trainable.values():
        p.grad = None
    del optimizer
    fp32_trained = sum(p.numel() for p in trainable.values() if p.dtype == torch.float32)
    copies = 0 if precision == "fp32" else 2 * fp32_trained
    return StepMeasurement(
        mode=mode, size=size, checkpointing=checkpointing, precision=precision,
        parameters=sum(p.numel() for p in unet.parameters()),
        trainable=sum(p.numel() for p in trainable.values()),
        weights_bytes=tensor_bytes(unet.parameters()), fp32_trained_in_run=fp32_trained,
        grads_measured_params=sum(p.numel() for p in kept.values()), grads_measured_bytes=grads_measured,
        grads_counted_bytes=grads_counted,
        optimizer_measured_params=sum(p.numel() for p in kept.values()), optimizer_measured_bytes=optimizer_bytes,
        optimizer_step_extra_bytes=step_extra, forward_peak_bytes=peaks["forward"][0],
        backward_peak_bytes=peaks["backward"][0], backward_peak_with_grads_bytes=peaks["backward"][1],
        forward_activation_bytes=peaks["forward"][0] - copies,
        backward_activation_bytes=peaks["backward"][0] - grads_measured,
        seconds=time.perf_counter() - started,
        lora_backend=_lora_backend(unet),
    )


def _lora_backend(unet) -> str:
    names = {type(m).__module__ for m in unet.modules()}
    if any(n.startswith("peft") for n in names):
        import peft

        return f"peft {peft.__version__}"
    return "minimal" if any(type(m).__name__ == "MinimalLoRA" for m in unet.modules()) else ""


# ---------------------------------------------------------------------------------------------
# Fitting and counting


def fit_activations(sizes: list[Size], values: list[float]) -> dict:
    """``value = a + b * units + c * pixels``, with ``units`` = latent pixels x frames x batch and
    ``pixels`` = latent pixels x batch: the second term is what every frame costs, the third what
    each pixel costs once whatever the frame count (SVD's temporal blocks attend to one context per
    pixel, broadcast over frames). Solved exactly from three sizes that vary frames and pixels;
    with two sizes, ``c = 0`` (a line in units)."""
    rows = [(1.0, float(s.units), float(s.height * s.width * s.batch)) for s in sizes]
    if len(rows) >= 3:
        coef = _least_squares(rows, values)
    else:
        a, b = fit_line([(r[1], v) for r, v in zip(rows, values)])
        coef = (a, b, 0.0)
    fit = {"a": coef[0], "b": coef[1], "c": coef[2]}
    fit["points"] = [[asdict(s), v] for s, v in zip(sizes, values)]
    fit["max_residual"] = max(abs(activation_term(fit, s) - v) for s, v in zip(sizes, values))
    return fit


def activation_term(fit: dict, size: Size) -> float:
    return fit["a"] + fit["b"] * size.units + fit.get("c", 0.0) * size.height * size.width * size.batch


def _least_squares(rows: list[tuple[float, ...]], values: list[float]) -> tuple[float, ...]:
    # normal equations of a 3-term fit, solved by Cramer's rule (no numpy needed for an estimate)
    n = len(rows[0])
    m = [[sum(r[i] * r[j] for r in rows) for j in range(n)] for i in range(n)]
    v = [sum(r[i] * y for r, y in zip(rows, values)) for i in range(n)]

    def det(a):
        return (a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]))

    d = det(m)
    if abs(d) < 1e-9 * max(1.0, abs(m[2][2]) * abs(m[1][1]) * abs(m[0][0])):
        raise ValueError("the sizes do not vary frames and pixels independently; cannot fit the activation term")
    out = []
    for k in range(n):
        mk = [[v[i] if j == k else m[i][j] for j in range(n)] for i in range(n)]
        out.append(det(mk) / d)
    return tuple(out)


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``(a, b)`` of ``y = a + b x``."""
    n = len(points)
    if n < 2 or len({x for x, _ in points}) < 2:
        raise ValueError(f"a line needs two or more distinct sizes; found {points}")
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def parameter_counts(config: dict, exvideo_frames: int) -> dict:
    """Counts the prediction scales with (computed on the meta device, no memory)."""
    import torch

    from longvid_core.networks import exvideo
    from longvid_core.networks.unet import LongVidUNet

    with torch.device("meta"):
        unet = LongVidUNet(**config)
        base = sum(p.numel() for p in unet.parameters())
        lora_in_out = lora_parameter_count(unet, 1)
        exvideo.extend_unet(unet, exvideo_frames)
    trained = exvideo.extension_parameters(unet)
    table_rows = sum(p.shape[1] for n, p in trained.items() if n.endswith("positional_table"))
    exvideo_trained = sum(p.numel() for p in trained.values())
    return {
        "unet_base": base,
        "exvideo_trained_without_table": exvideo_trained - table_rows * exvideo_frames,
        "exvideo_table_per_frame": table_rows,
        "exvideo_new_without_table": sum(p.numel() for n, p in trained.items() if "positional_conv" in n),
        "lora_in_plus_out": lora_in_out,
    }


def other_components() -> dict:
    """VAE and CLIP image-encoder parameter counts of the released file (they sit on the GPU too)."""
    from longvid_core.weights.keymaps import sgm_clip, sgm_vae

    return {key: sum(math.prod(s) for s in released_shapes(prefix).values())
            for key, prefix in (("vae", sgm_vae.PREFIX), ("image_encoder", sgm_clip.PREFIX))}


# ---------------------------------------------------------------------------------------------
# Prediction


@dataclass(frozen=True)
class Setting:
    mode: str = "exvideo"  # comma list as --mode: exvideo | lora | full (+ progressive)
    height: int = 512  # pixels
    width: int = 512
    frames: int = 25
    batch: int = 1
    precision: str = "bf16"
    checkpointing: bool = True
    eight_bit: bool = False
    zero_stage: int = 0
    gpus: int = 1
    offload: bool = False
    ema: bool = False
    exvideo_frames: int = 128
    lora_rank: int = LORA_RANK

    @property
    def parameter_set(self) -> str:
        modes = [m.strip() for m in self.mode.split(",")]
        return "full" if "full" in modes else "lora" if "lora" in modes else "exvideo"

    def check(self) -> None:
        if self.parameter_set not in PARAMETER_SETS:
            raise ValueError(f"mode must name one of {PARAMETER_SETS}; found {self.mode!r}")
        if self.precision not in PRECISION_BYTES:
            raise ValueError(f"precision must be one of {sorted(PRECISION_BYTES)}; found {self.precision!r}")
        if self.zero_stage not in (0, 2):
            raise ValueError(f"ZeRO stage must be 0 or 2; found {self.zero_stage}")
        if self.gpus < 1 or self.batch < 1 or self.frames < 1:
            raise ValueError(f"gpus, batch and frames must be >= 1; found {self.gpus}, {self.batch}, {self.frames}")
        if self.offload and self.zero_stage != 2:
            raise ValueError("optimizer offload needs ZeRO stage 2")
        if self.height % 8 or self.width % 8:
            raise ValueError(f"height and width must be multiples of 8; found {self.height}x{self.width}")


@dataclass
class Line:
    label: str
    bytes: int
    how: str  # "measured", "fitted to measurements", "computed"


@dataclass
class Prediction:
    setting: Setting
    lines: list[Line] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(line.bytes for line in self.lines if not line.label.startswith("("))

    def fits(self, capacity_gib: float) -> bool:
        return self.total <= (1 - FIT_MARGIN) * capacity_gib * GIB


def trained_parameters(coeffs: dict, setting: Setting) -> int:
    counts = coeffs["counts"]
    if setting.parameter_set == "full":
        return counts["unet_base"]
    if setting.parameter_set == "lora":
        return setting.lora_rank * counts["lora_in_plus_out"]
    return counts["exvideo_trained_without_table"] + counts["exvideo_table_per_frame"] * setting.exvideo_frames


def predict(coeffs: dict, setting: Setting) -> Prediction:
    """Peak GPU memory of one training step at ``setting``, from the stored measurement ``coeffs``."""
    setting.check()
    counts, other = coeffs["counts"], coeffs["other_components"]
    low = PRECISION_BYTES[setting.precision]
    trained = trained_parameters(coeffs, setting)
    base = counts["unet_base"]
    if setting.parameter_set == "exvideo":
        frozen = base - (counts["exvideo_trained_without_table"] - counts["exvideo_new_without_table"])
    elif setting.parameter_set == "lora":
        frozen = base
    else:
        frozen = 0
    shards = setting.gpus if setting.zero_stage == 2 else 1
    state_bytes = EIGHT_BIT_STATE_BYTES if setting.eight_bit else coeffs["optimizer_bytes_per_param"]
    fit = coeffs["activations"][_fit_key(setting.parameter_set, setting.checkpointing)]
    latent = (setting.height // 8) * (setting.width // 8)
    units = latent * setting.frames * setting.batch
    act_scale = coeffs["fp32_activation_ratio"] if setting.precision == "fp32" else 1.0
    clip = Size(setting.height // 8, setting.width // 8, setting.frames, setting.batch)
    act = {phase: int(max(0.0, activation_term(fit[phase], clip)) * act_scale) for phase in PHASES}
    copies = 0 if setting.precision == "fp32" else 2 * trained
    grads = 4 * trained // shards
    step_extra = 0 if setting.offload else int(coeffs["optimizer_step_extra_per_param"] * trained / shards)
    # the three moments a step can peak at, over the weights and states that persist
    phases = {
        f"forward: activations {act['forward'] / GIB:.2f} [fitted] + autocast copies of the fp32 trained weights "
        f"{copies / GIB:.2f} [computed]": act["forward"] + copies,
        f"backward: activations {act['backward'] / GIB:.2f} [fitted] + gradients {grads / GIB:.2f} [computed; all "
        "of them, an upper bound]": act["backward"] + grads,
        f"optimizer step: gradients {grads / GIB:.2f} + the step's temporaries {step_extra / GIB:.2f} "
        "[computed at the bytes per parameter measured]": grads + step_extra,
    }
    largest = max(phases, key=phases.get)
    optimizer = 0 if setting.offload else int(state_bytes * trained / shards)
    lines = [
        Line(f"UNet weights: {frozen / 1e9:.2f} B frozen in {setting.precision}, {trained / 1e9:.3f} B trained "
             "in fp32", frozen * low + trained * 4, "computed (bytes per parameter as measured)"),
        Line("VAE (fp32) and CLIP image encoder", other["vae"] * 4 + other["image_encoder"] * low, "computed"),
        Line(f"optimizer states ({'8-bit' if setting.eight_bit else 'AdamW fp32'}"
             f"{f' / {shards} GPUs' if shards > 1 else ''}{', offloaded to CPU' if setting.offload else ''})",
             optimizer, "computed" if setting.eight_bit or setting.offload else
             "computed (bytes per parameter as measured)"),
        Line("EMA of the trained weights, fp32" if setting.ema else "EMA (off)", 4 * trained if setting.ema else 0,
             "computed"),
        Line("CUDA context (typical)", CUDA_CONTEXT_BYTES, "computed"),
        Line(f"largest moment of the step ({units:,} latent pixels x frames x batch"
             f"{f'; gradients / {shards} GPUs' if shards > 1 else ''}): {largest}", phases[largest],
             "fitted to measurements + computed"),
    ]
    lines += [Line(f"(other moment: {name})", value, "fitted to measurements + computed")
              for name, value in phases.items() if name != largest]
    if setting.offload:
        lines.append(Line("(optimizer states in CPU memory)", int(state_bytes * trained / shards), "computed"))
    return Prediction(setting, lines)


def format_prediction(prediction: Prediction, capacities=(24, 48, 80)) -> str:
    s = prediction.setting
    head = (f"memory estimate: mode {s.mode}, {s.width}x{s.height} x {s.frames} frames, batch {s.batch}, "
            f"{s.precision}, gradient checkpointing {'on' if s.checkpointing else 'off'}, "
            f"{'8-bit' if s.eight_bit else 'fp32 AdamW'} states, "
            + (f"ZeRO-2 over {s.gpus} GPUs{' + optimizer offload' if s.offload else ''}" if s.zero_stage == 2
               else "no ZeRO"))
    rows = [head]
    for line in prediction.lines:
        rows.append(f"  {line.bytes / GIB:7.2f} GiB  {line.label}  [{line.how}]")
    verdict = ", ".join(f"{c} GB {'fits' if prediction.fits(c) else 'does not fit'}" for c in capacities)
    rows.append(f"  {prediction.total / GIB:7.2f} GiB  peak per GPU ({verdict}; "
                f"{int(FIT_MARGIN * 100)}% kept free for the allocator)")
    return "\n".join(rows)


def load_coefficients(path=COEFFICIENTS) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no memory measurement at {path}; run `python -m training.memory --full-size` "
                                "to make one")
    return json.loads(path.read_text(encoding="utf-8"))


def variants(setting: Setting) -> list[Setting]:
    """The setting as given and the options that lower memory: 8-bit states, ZeRO-2 over 2/8 GPUs, offload."""
    from dataclasses import replace

    out = [setting]
    for kw in (dict(eight_bit=True), dict(zero_stage=2, gpus=2), dict(zero_stage=2, gpus=8),
               dict(zero_stage=2, gpus=setting.gpus if setting.zero_stage == 2 else 1, offload=True)):
        other = replace(setting, **kw)
        if other not in out:
            out.append(other)
    return out


def setting_from_config(config) -> Setting:
    """The prediction's settings from the trainer's :class:`training.config.TrainConfig`."""
    return Setting(mode=config.mode, height=config.height, width=config.width, frames=config.clip_frames(),
                   batch=config.batch_size, precision=config.precision,
                   checkpointing=config.gradient_checkpointing, eight_bit=config.optimizer == "adamw8bit",
                   ema=config.ema_decay > 0, exvideo_frames=config.exvideo_frames, lora_rank=config.lora_rank)


def estimate_report(config, coefficients_path=COEFFICIENTS) -> str:
    """What ``train.py --estimate-memory`` prints: the breakdown for the given settings, then the
    peak with each option that lowers it (ZeRO-2 is chosen in the accelerate config, not a flag)."""
    coeffs = load_coefficients(coefficients_path)
    setting = setting_from_config(config)
    lines = [format_prediction(predict(coeffs, setting)), "  with other options (peak per GPU):"]
    for other in variants(setting)[1:]:
        p = predict(coeffs, other)
        what = ", ".join(filter(None, ("8-bit states" if other.eight_bit else "",
                                       f"ZeRO-2 over {other.gpus} GPU(s)" if other.zero_stage == 2 else "",
                                       "optimizer offload" if other.offload else "")))
        fits = ", ".join(f"{c} GB" for c in (24, 48, 80) if p.fits(c)) or "none of 24/48/80 GB"
        lines.append(f"    {what:<48} {p.total / GIB:7.2f} GiB  (fits: {fits})")
    lines.append(f"  from {Path(coefficients_path).name}: {coeffs['plan']} UNet measured on the CPU "
                 f"{coeffs['measured_utc']} UTC ({coeffs['command']}); an upper bound, see docs/training.md")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The measurement run


def run_measurements(plan: Plan, log=print) -> dict:
    """Every step of the plan, measured; returns the coefficients the prediction uses."""
    import gc

    import torch

    log(f"# LongVid training memory, {plan.name} UNet, measured on the CPU with torch {torch.__version__} "
        f"({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC)")
    steps: list[StepMeasurement] = []
    layout = None
    runs = [("exvideo", "bf16"), ("exvideo,progressive", "bf16"), ("lora,progressive", "bf16"), ("full", "bf16"),
            ("lora", "fp32")]
    for mode, precision in runs:
        parameter_set = "full" if "full" in mode else "lora" if "lora" in mode else "exvideo"
        unet, trainable = build_unet(plan.config, parameter_set, plan.exvideo_frames, precision,
                                     trained_dtype_prefix=plan.kept_prefix)
        if layout is None and plan.name.startswith("full"):
            layout = check_released_layout(unet, plan.config)
            log(f"layout: {layout} UNet tensors with the names and shapes of the released svd_xt.safetensors")
        if precision == "fp32":
            grid = [(plan.fp32_size, True)]
        elif "progressive" in mode and parameter_set == "exvideo":
            grid = [(plan.progressive_size, True)]
        else:
            grid = [(size, True) for size in plan.sizes] + [(size, False) for size in plan.sizes_without_checkpointing]
        for size, ckpt in grid:
            m = measure_step(unet, trainable, mode, size, ckpt, precision, plan.kept_prefix, plan.config)
            steps.append(m)
            log(describe_step(m))
        del unet, trainable
        gc.collect()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return coefficients_from(plan.name, plan.config, plan.exvideo_frames, steps, layout, when)


def describe_step(m: StepMeasurement) -> str:
    return (f"step {m.mode:<20} {m.precision} ckpt={'on ' if m.checkpointing else 'off'} {m.size.label():<40} "
            f"weights {m.weights_bytes / GIB:.2f} GiB [measured]; grads {m.grads_measured_bytes / GIB:.3f} GiB of "
            f"{m.grads_measured_params:,} params [measured] + {m.grads_counted_bytes / GIB:.2f} GiB [computed]; "
            f"AdamW {m.optimizer_measured_bytes / GIB:.3f} GiB [measured]; peak over weights: forward "
            f"{m.forward_peak_bytes / GIB:.3f} GiB, backward {m.backward_peak_bytes / GIB:.3f} GiB, backward with "
            f"all gradients {m.backward_peak_with_grads_bytes / GIB:.3f} GiB [measured] -> activations forward "
            f"{m.forward_activation_bytes / GIB:.3f}, backward {m.backward_activation_bytes / GIB:.3f} GiB; "
            f"{m.seconds:.0f} s{f' (LoRA: {m.lora_backend})' if m.lora_backend else ''}")


PHASES = ("forward", "backward")


def _fit_key(parameter_set: str, checkpointing: bool) -> str:
    return f"{parameter_set}/{'ckpt' if checkpointing else 'no-ckpt'}"


def coefficients_from(plan_name: str, config: dict, exvideo_frames: int, steps: list[StepMeasurement],
                      layout, measured_utc: str) -> dict:
    """The stored measurement: fits, bytes per parameter and every step, from measured ``steps``."""
    fits = {}
    for parameter_set, mode in (("exvideo", "exvideo"), ("lora", "lora,progressive"), ("full", "full")):
        for ckpt in (True, False):
            chosen = [m for m in steps if m.mode == mode and m.checkpointing == ckpt and m.precision != "fp32"]
            fits[_fit_key(parameter_set, ckpt)] = entry = {}
            for phase in PHASES:
                entry[phase] = fit_activations([m.size for m in chosen],
                                               [getattr(m, f"{phase}_activation_bytes") for m in chosen])
    # steps outside the fits (exvideo + progressive at chunk + window frames) test the extrapolation
    checks = []
    for m in steps:
        if m.mode == "exvideo,progressive":
            fit = fits[_fit_key("exvideo", m.checkpointing)]
            for phase in PHASES:
                checks.append({"mode": m.mode, "phase": phase, "units": m.size.units,
                               "measured": getattr(m, f"{phase}_activation_bytes"),
                               "predicted": activation_term(fit[phase], m.size)})
    fp32 = next(m for m in steps if m.precision == "fp32")
    same = next(m for m in steps if m.mode == "lora,progressive" and m.size == fp32.size
                and m.checkpointing == fp32.checkpointing and m.precision != "fp32")
    kept = [m for m in steps if m.optimizer_measured_params]
    full = plan_name.startswith("full")
    return {
        "what": "LongVid training memory: fitted activation terms and bytes per parameter (training/memory.py)",
        "plan": plan_name,
        "measured_utc": measured_utc,
        "command": "python -m training.memory" + (" --full-size" if full else ""),
        "layout_tensors_checked": layout,
        "counts": parameter_counts(config, exvideo_frames),
        "other_components": other_components() if full else {"vae": 0, "image_encoder": 0},
        "optimizer_bytes_per_param": max(m.optimizer_measured_bytes / m.optimizer_measured_params for m in kept),
        "optimizer_step_extra_per_param": max(m.optimizer_step_extra_bytes / m.optimizer_measured_params
                                              for m in kept),
        "fp32_activation_ratio": fp32.backward_activation_bytes / max(1, same.backward_activation_bytes),
        "activations": fits,
        "extrapolation_checks": checks,
        "steps": [dict(asdict(m), size=asdict(m.size)) for m in steps],
    }


def steps_from(coeffs: dict) -> list[StepMeasurement]:
    """The measured steps of a stored measurement (to refit without measuring again)."""
    return [StepMeasurement(**{**s, "size": Size(**s["size"])}) for s in coeffs["steps"]]


DOC_SETTINGS = (("512x512x25", 512, 512, 25), ("1024x576x25", 1024, 576, 25), ("512x512x128", 512, 512, 128))
DOC_MODES = ("exvideo", "exvideo,progressive", "lora,progressive", "full")


def fit_table(coeffs: dict) -> list[str]:
    """Markdown rows: peak GiB per mode and size, and the first option list that fits 24/48/80 GB."""
    from dataclasses import replace

    # one-GPU options first (what a user owns), then more GPUs
    options = (("plain", {}), ("8-bit states", dict(eight_bit=True)),
               ("1 GPU, ZeRO-2 offload", dict(zero_stage=2, gpus=1, offload=True)),
               ("ZeRO-2 x2", dict(zero_stage=2, gpus=2)), ("ZeRO-2 x4", dict(zero_stage=2, gpus=4)),
               ("ZeRO-2 x8", dict(zero_stage=2, gpus=8)),
               ("ZeRO-2 x8 + offload", dict(zero_stage=2, gpus=8, offload=True)))
    rows = ["| mode | clip (WxHxF) | peak, plain AdamW | 24 GB | 48 GB | 80 GB |", "|---|---|---|---|---|---|"]
    for mode in DOC_MODES:
        for label, width, height, frames in DOC_SETTINGS:
            if "progressive" in mode:
                if frames != 25:
                    continue
                frames = 26  # chunk 2 + window 24
                label = label.replace("x25", "x26")
            plain = Setting(mode=mode, height=height, width=width, frames=frames)
            cells = []
            for capacity in (24, 48, 80):
                first = next((name for name, kw in options if predict(coeffs, replace(plain, **kw)).fits(capacity)),
                             None)
                cells.append(first if first else "no")
            rows.append(f"| {mode} | {label} | {predict(coeffs, plain).total / GIB:.1f} GiB | " + " | ".join(cells)
                        + " |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full-size", action="store_true", help="measure the full-size SVD-XT UNet (about 16 "
                        "minutes on 2 CPU cores, under 12 GB of RAM); default: the tiny test config")
    parser.add_argument("--out", default="", help="write the coefficients here (default: "
                        "training/memory_coefficients.json with --full-size, nowhere otherwise)")
    parser.add_argument("--table", action="store_true", help="print the fit table from the stored measurement "
                        "and exit")
    parser.add_argument("--refit", default="", help="fit again from the steps stored in this file (no measuring)")
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(fit_table(load_coefficients(args.out or COEFFICIENTS))))
        return 0
    plan = full_size_plan() if args.full_size else tiny_plan()
    if args.refit:
        old = load_coefficients(args.refit)
        coeffs = coefficients_from(old["plan"], plan.config, plan.exvideo_frames, steps_from(old),
                                   old["layout_tensors_checked"], old["measured_utc"])
    else:
        coeffs = run_measurements(plan)
    for key, entry in coeffs["activations"].items():
        for phase, fit in entry.items():
            print(f"fit {key:<16} {phase:<8} activations = {fit['a'] / GIB:.4f} GiB + {fit['b']:.0f} B x pixels x "
                  f"frames x batch + {fit['c']:.0f} B x pixels x batch [fitted to measurements; worst residual "
                  f"{fit['max_residual'] / GIB:.4f} GiB]")
    for check in coeffs["extrapolation_checks"]:
        print(f"check {check['mode']} {check['phase']} at {check['units']:,} units (outside the fit): "
              f"activations measured {check['measured'] / GIB:.4f} GiB, fit predicts "
              f"{check['predicted'] / GIB:.4f} GiB")
    print(f"AdamW states {coeffs['optimizer_bytes_per_param']:.3f} bytes/param [measured]; optimizer step "
          f"temporaries {coeffs['optimizer_step_extra_per_param']:.3f} bytes/param [measured]; fp32/bf16 "
          f"activations x{coeffs['fp32_activation_ratio']:.2f} [measured]")
    out = args.out or (str(COEFFICIENTS) if args.full_size else "")
    if out:
        Path(out).write_text(json.dumps(coeffs, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    if plan.name.startswith("full"):
        for mode in DOC_MODES:
            print(format_prediction(predict(coeffs, Setting(mode=mode, frames=26 if "progressive" in mode else 25))))
        print("\n".join(fit_table(coeffs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
