"""What a memory measurement runs on: the sizes and plans (full size, tiny), and the UNet a plan
builds in the released layout, extended by ExVideo or given LoRA adapters like the trainer does."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KEYS_SHAPES = REPO / "tests" / "data" / "svd_xt_keys_shapes.txt"
COEFFICIENTS = Path(__file__).resolve().parents[1] / "memory_coefficients.json"
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
