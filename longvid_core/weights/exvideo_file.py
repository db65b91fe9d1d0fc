"""ExVideo extension files: LongVid's layout (LongVid's names plus metadata) and the released
``ExVideo-SVD-128f-v1`` in DiffSynth-Studio's layout (:mod:`.keymaps.diffsynth`); see
docs/extension_formats.md. Both hold only the extension and are applied on top of a base SVD(-XT)
checkpoint: ``load_svd(base, extension=file)`` -> :func:`apply_extension_file`. The modules
themselves are :mod:`longvid_core.networks.exvideo`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from ..networks.exvideo import (TRAINED_SUBMODULES, extension_parameters, extension_state_dict,
                                is_new_tensor, max_frames, reference_parameter, swap_in, temporal_transformers,
                                unet_config, unet_of)
from .base_identity import identity_metadata
from .checkpoint_io import CheckpointError, atomic_save_safetensors, open_tensors
from .keymaps import diffsynth
from .keymaps.identify import identify_checkpoint

LAYOUTS = ("longvid", "diffsynth")
FORMAT_KIND = "longvid.exvideo-extension"
FORMAT_VERSION = 1
META_KIND = "longvid.kind"
META_VERSION = "longvid.format_version"
META_FRAMES = "longvid.frames"
META_MODULES = "longvid.modules"
META_TRAINED = "longvid.trained"
META_BASE_IDENTITY = "longvid.base_unet_identity"
META_BASE_CONFIG = "longvid.base_unet_config"
META_BASE_SOURCE = "longvid.base_source"

# Architecture entries of the UNet config (those keymaps.sgm_unet.config_from_shapes reads); the
# base identity covers these and the base tensors' names and shapes, not their values.
_ARCHITECTURE_KEYS = (
    "in_channels", "out_channels", "block_out_channels", "layers_per_block", "down_block_types",
    "up_block_types", "cross_attention_dim", "transformer_layers_per_block", "num_attention_heads",
    "addition_time_embed_dim", "projection_class_embeddings_input_dim",
)


def diffsynth_state_dict(model) -> dict[str, torch.Tensor]:
    """The extension's tensors under DiffSynth-Studio's names (``blocks.{N}.*``) without writing a
    file; works on the meta device (names and shapes of a full-size export)."""
    unet = unet_of(model)
    return diffsynth.from_ours(extension_state_dict(unet), unet_config(unet))


def _architecture(unet: torch.nn.Module) -> dict:
    config = unet_config(unet)
    return {key: config[key] for key in _ARCHITECTURE_KEYS if key in config}


def base_unet_identity(model) -> str:
    """A hash of the base UNet's architecture: its config (:data:`_ARCHITECTURE_KEYS`) and every
    base tensor's name and shape (ExVideo's new tensors excluded), not the weights' values (hashing
    1.5 B parameters would cost seconds on every save and load)."""
    unet = unet_of(model)
    shapes = [
        (name, list(tensor.shape)) for name, tensor in unet.state_dict().items()
        if not is_new_tensor(name)
    ]
    payload = json.dumps({"config": _architecture(unet), "tensors": sorted(shapes)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Files


def save_extension(model, path, layout: str = "longvid", metadata: Mapping[str, str] | None = None) -> Path:
    """Write the extension of an extended model to ``path`` (safetensors, atomically).

    ``layout="longvid"``: LongVid's names plus metadata (format version, frame count, modules, base
    identity). ``layout="diffsynth"``: the layout of the released ExVideo file, readable by
    DiffSynth-Studio. ``metadata`` (e.g. what it was trained for) is added to either.
    """
    extra = dict(metadata or {})
    unet = unet_of(model)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; found {layout!r}")
    frames = max_frames(unet)
    if frames is None:
        raise ValueError("expected an ExVideo-extended UNet to save; found a plain SVD UNet (extend_unet first)")
    if reference_parameter(next(iter(temporal_transformers(unet).values()))).is_meta:
        raise ValueError("cannot save a UNet on the meta device (it has no values); diffsynth_state_dict() and "
                         "extension_state_dict() give names and shapes")
    if layout == "diffsynth":
        # DiffSynth-Studio reads only the tensors; the loader compares the base identity in either layout
        identity = identity_metadata(getattr(model, "base_identity", None))
        return atomic_save_safetensors(diffsynth_state_dict(unet), path, metadata={"format": "pt", **extra, **identity})
    metadata = {
        **extra,
        "format": "pt",
        META_KIND: FORMAT_KIND,
        META_VERSION: str(FORMAT_VERSION),
        META_FRAMES: str(frames),
        META_MODULES: json.dumps(list(temporal_transformers(unet))),
        META_TRAINED: json.dumps(list(TRAINED_SUBMODULES)),
        META_BASE_IDENTITY: base_unet_identity(unet),
        META_BASE_CONFIG: json.dumps(_architecture(unet), sort_keys=True),
    }
    source = getattr(model, "source", "")
    if source:
        metadata[META_BASE_SOURCE] = Path(str(source)).name  # provenance only; never checked
    metadata.update(identity_metadata(getattr(model, "base_identity", None)))  # the loader compares it
    return atomic_save_safetensors(extension_state_dict(unet), path, metadata=metadata)


def extension_layout(tensors) -> str | None:
    """``"longvid"`` (by metadata), ``"diffsynth"`` (by its ``blocks.N.positional_embedding.embeddings``
    tables) or None for a file that is not an extension. ``tensors``: from ``open_tensors``."""
    if (getattr(tensors, "metadata", None) or {}).get(META_KIND) == FORMAT_KIND:
        return "longvid"
    if diffsynth.is_diffsynth_extension(tensors.keys()):
        return "diffsynth"
    return None


def _expected_shapes(unet: torch.nn.Module, frames: int) -> dict[str, tuple]:
    """Names and shapes the extension of ``unet`` at ``frames`` frames has, computed without
    changing the model (a failed load leaves it as it was)."""
    out = {}
    for name, module in temporal_transformers(unet).items():
        for sub, param in module.named_parameters():
            if sub.startswith(("time_pos_embed.", "temporal_transformer_blocks.")):
                out[f"{name}.{sub}"] = tuple(param.shape)
        out[f"{name}.positional_table"] = (frames, module.in_channels)
        out[f"{name}.positional_conv.weight"] = (module.inner_dim, module.inner_dim, 3, 3, 3)
        out[f"{name}.positional_conv.bias"] = (module.inner_dim,)
    return out


def _check_longvid_metadata(path, metadata: Mapping[str, str], unet) -> int:
    version = int(metadata.get(META_VERSION, "0"))
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: expected LongVid extension format version {FORMAT_VERSION}; found {version} "
            "(written by a different LongVid version)"
        )
    ours = json.loads(json.dumps(_architecture(unet)))  # tuples -> lists, as stored
    theirs = json.loads(metadata.get(META_BASE_CONFIG, "{}"))
    if metadata.get(META_BASE_IDENTITY) != base_unet_identity(unet):
        differing = {k: (theirs.get(k), ours.get(k)) for k in sorted(set(ours) | set(theirs))
                     if theirs.get(k) != ours.get(k)}
        detail = "; ".join(f"{k}: extension {a}, base {b}" for k, (a, b) in differing.items()) or (
            "same config, different tensor names or shapes")
        raise CheckpointError(
            f"{path}: this extension was made for a different base UNet ({detail}); expected base identity "
            f"{metadata.get(META_BASE_IDENTITY, '?')[:12]}, found {base_unet_identity(unet)[:12]}"
        )
    if not metadata.get(META_FRAMES, "").isdigit():
        raise CheckpointError(
            f"{path}: expected metadata {META_FRAMES} (the table length); found {metadata.get(META_FRAMES)!r}"
        )
    return int(metadata[META_FRAMES])


def apply_extension_file(model, path):
    """Apply an ExVideo extension file (DiffSynth or LongVid layout, detected) to a loaded base SVD
    model (an SVDModel or its UNet) in place; returns ``model``.

    New modules are built on the meta device and filled by assignment from tensors read one at a
    time in the UNet's dtype and device, so a fp16 load never holds an fp32 copy. Every check runs
    before the model is changed.
    """
    unet = unet_of(model)
    transformers = temporal_transformers(unet)
    config = unet_config(unet)
    ref = reference_parameter(next(iter(transformers.values())))
    tensors = open_tensors(path, dtype=ref.dtype, device=ref.device)
    layout = extension_layout(tensors)
    if layout is None:
        kind = identify_checkpoint(list(tensors.keys()))
        if kind == "svd":
            kind = "a full SVD checkpoint (load it as the base: load_svd(base, extension=extension_file))"
        raise CheckpointError(
            f"{path}: expected an ExVideo extension (DiffSynth layout with blocks.N.positional_embedding.embeddings, "
            f"or LongVid's with metadata {META_KIND}={FORMAT_KIND}); this file looks like {kind}"
        )
    # names and shapes are checked from the file header before any tensor is read
    if layout == "diffsynth":
        try:
            frames = diffsynth.frames_in(tensors.shapes)
            shapes = diffsynth.to_ours(tensors.shapes, config)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
    else:
        frames = _check_longvid_metadata(path, tensors.metadata, unet)
        shapes = tensors.shapes
    expected = _expected_shapes(unet, frames)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if tuple(shapes[k]) != expected[k])
    if missing or unexpected or wrong:
        details = [f"missing: {missing[:4]}" if missing else "", f"unexpected: {unexpected[:4]}" if unexpected else ""]
        details += [f"{k}: expected {list(expected[k])}, found {list(shapes[k])}" for k in wrong[:4]]
        raise CheckpointError(
            f"{path}: this {layout}-layout extension does not fit the base UNet "
            f"(block_out_channels={tuple(config['block_out_channels'])}): " + "; ".join(d for d in details if d)
        )
    # read every tensor (one at a time, in the UNet's dtype) before the model changes
    state = diffsynth.to_ours(tensors, config) if layout == "diffsynth" else {k: tensors[k] for k in tensors.keys()}

    requires_grad = ref.requires_grad
    swap_in(unet, frames)
    result = unet.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: tensors with no place in the UNet: {result.unexpected_keys[:5]}")
    for param in extension_parameters(unet).values():
        param.requires_grad_(requires_grad)
    left_empty = [n for n, p in extension_parameters(unet).items() if p.is_meta]
    if left_empty:
        raise CheckpointError(f"{path}: the extension did not fill {left_empty[:5]}")
    return model


__all__ = ["FORMAT_KIND", "FORMAT_VERSION", "LAYOUTS", "apply_extension_file", "base_unet_identity",
           "diffsynth_state_dict", "extension_layout", "save_extension"]
