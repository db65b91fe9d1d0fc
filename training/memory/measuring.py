"""Measuring a real training step's memory on the CPU (weights, gradients, optimizer states and
the activation peak from torch's allocator events), and the measurement run over a plan that
turns the steps into the stored coefficients."""

from __future__ import annotations

import datetime
import time
from dataclasses import asdict, dataclass

from .estimating import PHASES, activation_term, fit_activations, fit_key, other_components, parameter_counts
from .plans import GIB, Plan, Size, build_unet, check_released_layout

_VIRTUAL_GRAD = "longvid.memory.grad_bytes="
_PHASE = "longvid.memory.phase="


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
        lora_backend=lora_backend(unet),
    )


def lora_backend(unet) -> str:
    names = {type(m).__module__ for m in unet.modules()}
    if any(n.startswith("peft") for n in names):
        import peft

        return f"peft {peft.__version__}"
    return "minimal" if any(type(m).__name__ == "MinimalLoRA" for m in unet.modules()) else ""

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


def coefficients_from(plan_name: str, config: dict, exvideo_frames: int, steps: list[StepMeasurement],
                      layout, measured_utc: str) -> dict:
    """The stored measurement: fits, bytes per parameter and every step, from measured ``steps``."""
    fits = {}
    for parameter_set, mode in (("exvideo", "exvideo"), ("lora", "lora,progressive"), ("full", "full")):
        for ckpt in (True, False):
            chosen = [m for m in steps if m.mode == mode and m.checkpointing == ckpt and m.precision != "fp32"]
            fits[fit_key(parameter_set, ckpt)] = entry = {}
            for phase in PHASES:
                entry[phase] = fit_activations([m.size for m in chosen],
                                               [getattr(m, f"{phase}_activation_bytes") for m in chosen])
    # steps outside the fits (exvideo + progressive at chunk + window frames) test the extrapolation
    checks = []
    for m in steps:
        if m.mode == "exvideo,progressive":
            fit = fits[fit_key("exvideo", m.checkpointing)]
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
        "what": "LongVid training memory: fitted activation terms and bytes per parameter (training/memory/)",
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
