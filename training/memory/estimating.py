"""Estimating a training run's memory without torch: the activation fit, parameter counts and the
prediction ``train.py --estimate-memory`` prints, from the stored measurement."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .plans import (COEFFICIENTS, CUDA_CONTEXT_BYTES, EIGHT_BIT_STATE_BYTES, FIT_MARGIN, GIB, LORA_RANK,
                    PARAMETER_SETS, PRECISION_BYTES, Size, lora_parameter_count, released_shapes)

PHASES = ("forward", "backward")


def fit_key(parameter_set: str, checkpointing: bool) -> str:
    return f"{parameter_set}/{'ckpt' if checkpointing else 'no-ckpt'}"

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
    fit = coeffs["activations"][fit_key(setting.parameter_set, setting.checkpointing)]
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
