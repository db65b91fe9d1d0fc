"""LoRA for SVD's UNet: the file LongVid's trainer writes (``--mode lora``) and ``load_svd`` reads.

A LoRA adapts chosen ``nn.Linear`` layers of the UNet (by default the attention projections
``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every spatial and temporal transformer block) with
two small matrices: ``A [rank, in]`` and ``B [out, rank]``. The adapted layer computes
``W x + b + strength * alpha / rank * B (A x)``; merging bakes exactly that into the weight,
``W += strength * alpha / rank * B @ A`` (computed in float32, stored in the weight's dtype).

File (safetensors; the trainer writes float32, the values it trained):

- ``<module>.lora_A.weight`` ``[rank, in_features]`` and ``<module>.lora_B.weight``
  ``[out_features, rank]`` for every adapted layer, ``<module>`` its name in LongVid's (diffusers')
  UNet, e.g. ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``: peft's names without
  its adapter-name infix (``lora_A.default.weight``);
- metadata :data:`META_KIND` = :data:`FORMAT_KIND`, :data:`META_VERSION`, :data:`META_RANK`,
  :data:`META_ALPHA`, :data:`META_TARGETS` (the patterns the layers were chosen by, JSON), and when
  LongVid's trainer wrote it ``longvid.trained_for`` (:mod:`longvid_core.weights.trained_for`) and
  :data:`META_EXTENSION` (the name of the ExVideo extension it was trained beside, if any);
  the base it was made on: ``longvid.base_content`` (:mod:`longvid_core.weights.base_identity`; ``load_svd``
  warns when the loaded base differs) and :data:`META_BASE_SOURCE` (its file name).

Layers are injected with peft (the library diffusers uses for LoRA), which the trainer trains and
unmerged loading keeps; this module is the only place that knows the file's names.
"""

from __future__ import annotations

import fnmatch
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch

from .checkpoint_io import CheckpointError, atomic_save_safetensors, open_tensors
from .trained_for import TrainedFor

FORMAT_KIND = "longvid.lora"
FORMAT_VERSION = 1
META_KIND = "longvid.kind"  # the same key the LongVid extension layout uses for its kind
META_VERSION = "longvid.format_version"
META_RANK = "longvid.lora.rank"
META_ALPHA = "longvid.lora.alpha"
META_TARGETS = "longvid.lora.targets"
META_EXTENSION = "longvid.lora.trained_beside_extension"  # provenance: the extension file's name, if any
META_BASE_SOURCE = "longvid.base_source"  # provenance: the base file's name (as extensions record it)

# SVD's attention projections, in spatial and temporal transformer blocks alike (self- and cross-attention)
DEFAULT_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "default"  # peft's adapter name inside the model; never part of a file's keys
_A, _B = ".lora_A.weight", ".lora_B.weight"


# ---------------------------------------------------------------------------------------------
# Which layers


def parse_targets(text: str | Iterable[str]) -> tuple[str, ...]:
    """``"to_q,to_k"`` (or a list) -> ``("to_q", "to_k")``; raises ValueError when empty."""
    items = text.split(",") if isinstance(text, str) else list(text)
    targets = tuple(t.strip() for t in items if t.strip())
    if not targets:
        raise ValueError(f"LoRA targets: expected a comma list of module-name patterns (e.g. "
                         f"{','.join(DEFAULT_TARGETS)}); found {text!r}")
    return targets


def matches(name: str, pattern: str) -> bool:
    """A module name matches a pattern equal to it or to its last dotted parts (peft's rule:
    ``to_out.0`` matches ``...attn1.to_out.0``); ``*`` and ``?`` are wildcards (``*`` spans dots)."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


def linear_layers(unet: torch.nn.Module) -> list[str]:
    return [name for name, module in unet.named_modules() if type(module) is torch.nn.Linear]


def resolve_targets(unet: torch.nn.Module, patterns: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """The names of the UNet's linear layers the patterns choose, in UNet order, without ``exclude``.

    Raises ValueError naming a pattern that matches no linear layer (a typo would otherwise train
    nothing there), or when ``exclude`` leaves nothing."""
    patterns = parse_targets(patterns)
    linears = linear_layers(unet)
    for pattern in patterns:
        if not any(matches(name, pattern) for name in linears):
            examples = [n for n in linears if ".attn1." in n][:2] or linears[:2]
            raise ValueError(f"LoRA target {pattern!r} matches no linear layer of the UNet; expected a name or "
                             f"its last parts, e.g. {examples} (or to_q, to_out.0)")
    excluded = set(exclude)
    chosen = [name for name in linears if any(matches(name, p) for p in patterns)]
    kept = [name for name in chosen if name not in excluded]
    if not kept:
        raise ValueError(f"LoRA targets {list(patterns)}: all {len(chosen)} matching layers are trained whole "
                         "already (e.g. by the ExVideo extension); choose layers outside them")
    return kept


# ---------------------------------------------------------------------------------------------
# LoRA layers in a UNet (peft)


def lora_layers(unet: torch.nn.Module) -> dict:
    """Every peft LoRA layer of ``unet`` by module name, in UNet order."""
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in unet.named_modules() if isinstance(module, LoraLayer)}


def add_lora_layers(unet: torch.nn.Module, modules: list[str], rank: int, alpha: float) -> dict[str, torch.nn.Parameter]:
    """Wrap the linear layers ``modules`` in peft LoRA layers (A random, B zero: the output is
    unchanged until trained). Returns :func:`lora_parameters`. peft leaves only these trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1 or alpha <= 0:
        raise ValueError(f"LoRA rank must be >= 1 and alpha > 0; found rank {rank}, alpha {alpha}")
    if lora_layers(unet):
        raise ValueError("this UNet already has LoRA layers; load or train one LoRA at a time")
    missing = [m for m in modules if not isinstance(_get(unet, m), torch.nn.Linear)]
    if missing:
        raise ValueError(f"LoRA: expected linear layers; {missing[:3]} are not")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(modules), lora_dropout=0.0, bias="none")
    inject_adapter_in_model(config, unet, adapter_name=ADAPTER)
    return lora_parameters(unet)


def lora_parameters(unet: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The LoRA matrices of ``unet`` under the file's names, in UNet order (A then B per layer)."""
    out = {}
    for name, layer in lora_layers(unet).items():
        out[name + _A] = layer.lora_A[ADAPTER].weight
        out[name + _B] = layer.lora_B[ADAPTER].weight
    return out


def _get(unet: torch.nn.Module, name: str):
    try:
        return unet.get_submodule(name)
    except AttributeError:
        return None


def _set(unet: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(unet.get_submodule(parent) if parent else unet, leaf, module)


@contextmanager
def without_lora_layers(unet: torch.nn.Module):
    """Inside the block the UNet holds its plain linear layers again (names and state dict as
    before injection), so files of the base or of an extension are written as without LoRA."""
    layers = lora_layers(unet)
    for name, layer in layers.items():
        _set(unet, name, layer.get_base_layer())
    try:
        yield unet
    finally:
        for name, layer in layers.items():
            _set(unet, name, layer)


# ---------------------------------------------------------------------------------------------
# Files


def lora_metadata(rank: int, alpha: float, targets: Iterable[str], extra: Mapping[str, str] | None = None) -> dict:
    return {
        **dict(extra or {}),
        "format": "pt",
        META_KIND: FORMAT_KIND,
        META_VERSION: str(FORMAT_VERSION),
        META_RANK: str(int(rank)),
        META_ALPHA: repr(float(alpha)),
        META_TARGETS: json.dumps(list(targets)),
    }


def save_lora(model, path, targets: Iterable[str], metadata: Mapping[str, str] | None = None) -> Path:
    """Write the LoRA layers of ``model`` (an SVDModel or its UNet) to ``path`` (atomically), as they
    are (the trainer's: float32), with the base identity ``load_svd`` gave the model, if any.
    ``targets``: the patterns the layers were chosen by (recorded); ``metadata``: e.g. what it was
    trained for."""
    from .base_identity import identity_metadata

    unet = getattr(model, "unet", model)
    layers = lora_layers(unet)
    if not layers:
        raise ValueError("expected a UNet with LoRA layers (add_lora_layers); found none")
    ranks = {layer.r[ADAPTER] for layer in layers.values()}
    alphas = {float(layer.lora_alpha[ADAPTER]) for layer in layers.values()}
    if len(ranks) != 1 or len(alphas) != 1:
        raise ValueError(f"expected one rank and alpha for every LoRA layer; found ranks {ranks}, alphas {alphas}")
    extra = {**dict(metadata or {}), **identity_metadata(getattr(model, "base_identity", None))}
    source = getattr(model, "source", "")
    if source:
        extra[META_BASE_SOURCE] = Path(str(source)).name  # named in the loader's warning; never checked
    tensors = {name: p.detach() for name, p in lora_parameters(unet).items()}
    return atomic_save_safetensors(tensors, path, metadata=lora_metadata(ranks.pop(), alphas.pop(), targets, extra))


@dataclass(frozen=True)
class LoraFile:
    """A LoRA file read and checked by :func:`read_lora`: ``weights`` maps each module name to its
    ``(A, B)`` tensors, as stored."""

    path: Path
    rank: int
    alpha: float
    targets: tuple[str, ...]
    weights: dict = field(repr=False)
    metadata: dict = field(repr=False)

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    @property
    def trained_for(self) -> TrainedFor | None:
        return TrainedFor.from_metadata(self.metadata)

    def describe(self) -> str:
        return f"LoRA rank {self.rank}, alpha {self.alpha:g} on {len(self.weights)} layers ({','.join(self.targets)})"


def _looks_like(keys: list[str]) -> str:
    from .keymaps.identify import identify_checkpoint

    return identify_checkpoint(keys)


def read_lora(path) -> LoraFile:
    """Read a LongVid LoRA file; raises CheckpointError saying what was expected and found."""
    path = Path(path)
    tensors = open_tensors(path)
    metadata = dict(getattr(tensors, "metadata", None) or {})
    keys = list(tensors.keys())
    if metadata.get(META_KIND) != FORMAT_KIND:
        raise CheckpointError(f"{path}: expected a LongVid LoRA file (metadata {META_KIND}={FORMAT_KIND}, keys "
                              f"<module>{_A}); found {metadata.get(META_KIND) or 'no such metadata'}: this file looks "
                              f"like {_looks_like(keys)}")
    if metadata.get(META_VERSION) != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: expected LongVid LoRA format version {FORMAT_VERSION}; found "
                              f"{metadata.get(META_VERSION)!r} (written by a different LongVid version)")
    try:
        rank, alpha = int(metadata[META_RANK]), float(metadata[META_ALPHA])
        targets = tuple(json.loads(metadata.get(META_TARGETS, "[]")))
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: expected metadata {META_RANK} (an integer) and {META_ALPHA} (a number); "
                              f"found {metadata.get(META_RANK)!r}, {metadata.get(META_ALPHA)!r} ({exc})") from None
    stray = [k for k in keys if not k.endswith((_A, _B))]
    if stray or not keys:
        raise CheckpointError(f"{path}: expected only <module>{_A} / <module>{_B} tensors; found "
                              f"{stray[:3] or 'no tensors'}")
    modules = sorted({k[: -len(_A)] for k in keys})
    shapes = tensors.shapes
    unpaired = [m for m in modules if m + _A not in shapes or m + _B not in shapes]
    if unpaired:
        raise CheckpointError(f"{path}: every layer needs both {_A[1:]} and {_B[1:]}; {unpaired[:3]} have one")
    bad = [f"{m}: A {list(shapes[m + _A])}, B {list(shapes[m + _B])}" for m in modules
           if len(shapes[m + _A]) != 2 or len(shapes[m + _B]) != 2
           or shapes[m + _A][0] != rank or shapes[m + _B][1] != rank]
    if bad:
        raise CheckpointError(f"{path}: expected A [rank {rank}, in] and B [out, rank {rank}]; found {bad[:3]}")
    weights = {m: (tensors[m + _A], tensors[m + _B]) for m in modules}
    return LoraFile(path, rank, alpha, targets, weights, metadata)


def check_fits(lora: LoraFile, unet: torch.nn.Module) -> None:
    """Raise CheckpointError when a layer the LoRA adapts is missing from ``unet``, is not a linear
    layer, or has another shape; nothing is changed."""
    missing, wrong = [], []
    for module, (a, b) in lora.weights.items():
        layer = _get(unet, module)
        if layer is None:
            missing.append(module)
        elif type(layer) is not torch.nn.Linear:
            wrong.append(f"{module}: expected a linear layer, found {type(layer).__name__}")
        elif (layer.out_features, layer.in_features) != (b.shape[0], a.shape[1]):
            wrong.append(f"{module}: LoRA for weight [{b.shape[0]}, {a.shape[1]}], model has "
                         f"[{layer.out_features}, {layer.in_features}]")
    if missing or wrong:
        have = [n for n in linear_layers(unet) if any(matches(n, t) for t in lora.targets)][:2]
        details = ([f"{len(missing)} target layers do not exist in the model, e.g. {missing[:2]} (the model has e.g. "
                    f"{have})"] if missing else []) + wrong[:3]
        raise CheckpointError(f"{lora.path}: this LoRA does not fit the model ({lora.describe()}): " + "; ".join(details))


@torch.no_grad()
def merge_lora(unet: torch.nn.Module, lora: LoraFile, strength: float = 1.0) -> None:
    """``W += strength * alpha / rank * B @ A`` for every adapted layer, in float32, stored in W's
    dtype. Strength 0 changes nothing (not even rounding)."""
    check_fits(lora, unet)
    if strength == 0:
        return
    for module, (a, b) in lora.weights.items():
        weight = unet.get_submodule(module).weight
        delta = b.to(weight.device, torch.float32) @ a.to(weight.device, torch.float32)
        weight.copy_((weight.float() + (strength * lora.scale) * delta).to(weight.dtype))


@torch.no_grad()
def attach_lora(unet: torch.nn.Module, lora: LoraFile, strength: float = 1.0) -> None:
    """Keep the LoRA as separate peft layers (in the weights' dtype) scaled by ``strength``: the
    base weights stay untouched and the strength can be changed later (:func:`set_strength`)."""
    check_fits(lora, unet)
    requires_grad = any(p.requires_grad for p in unet.parameters())
    params = add_lora_layers(unet, list(lora.weights), lora.rank, lora.alpha)
    for module, (a, b) in lora.weights.items():
        params[module + _A].copy_(a)
        params[module + _B].copy_(b)
    set_strength(unet, strength)
    for p in params.values():
        p.requires_grad_(requires_grad)


def set_strength(unet: torch.nn.Module, strength: float) -> None:
    """Scale every LoRA layer of ``unet`` to ``strength * alpha / rank``."""
    for layer in lora_layers(unet).values():
        layer.scaling[ADAPTER] = strength * layer.lora_alpha[ADAPTER] / layer.r[ADAPTER]


def apply_lora_file(model, path, strength: float = 1.0, merge: bool = True) -> LoraFile:
    """Read, check and apply a LoRA file to an SVDModel (or its UNet) in place: merged into the
    weights (``merge=True``) or kept as LoRA layers. Returns the file read."""
    unet = getattr(model, "unet", model)
    if lora_layers(unet):
        raise ValueError("this model already has LoRA layers; load or train one LoRA at a time")
    lora = read_lora(path)
    (merge_lora if merge else attach_lora)(unet, lora, float(strength))
    return lora


__all__ = [
    "FORMAT_KIND", "FORMAT_VERSION", "META_KIND", "META_VERSION", "META_RANK", "META_ALPHA", "META_TARGETS",
    "META_EXTENSION", "META_BASE_SOURCE",
    "DEFAULT_TARGETS", "ADAPTER", "parse_targets", "matches", "linear_layers", "resolve_targets", "lora_layers",
    "add_lora_layers", "lora_parameters", "without_lora_layers", "lora_metadata", "save_lora", "LoraFile",
    "read_lora", "check_fits", "merge_lora", "attach_lora", "set_strength", "apply_lora_file",
]
