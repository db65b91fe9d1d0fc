"""ExVideo for SVD: temporal transformer blocks extended from 25 to N frames.

ExVideo (Duan et al., 2024, "ExVideo: Extending Video Diffusion Models via Parameter-Efficient
Post-Tuning", Sec. 3.2 and Fig. 1) changes each of SVD's spatio-temporal transformers in two ways:

1. the fixed sinusoidal frame-position input becomes a trainable table ``[N, C]`` (initialised
   with the same sinusoid of "ping-pong" position ids, :func:`pingpong_position_ids`); SVD's position
   MLP (``time_pos_embed``) is kept after it;
2. an identity-initialised, reflect-padded 3x3x3 ``Conv3d(C, C)`` runs on the hidden states after
   the position embedding is added and before the temporal transformer block.

Freshly extended (:func:`extend_unet`) the model computes exactly what SVD computes for clips of up
to 25 frames. Post-tuning (Sec. 3.3) trains the temporal transformer blocks together with the
table, the conv and the position MLP; :func:`extension_parameters` names exactly those.

Files (see docs/extension_formats.md): the released ``ExVideo-SVD-128f-v1`` in DiffSynth-Studio's
layout (:mod:`longvid_core.keymaps.diffsynth`) and LongVid's own layout (LongVid's names plus
metadata). Both hold only the extension and are applied on top of a base SVD(-XT) checkpoint:
``load_svd(base, extension=file)`` -> :func:`apply_extension_file`.

Clips longer than the table are refused (``ValueError`` naming the limit): positions past N were
never trained, so there is no honest value to give them. Samplers ask :func:`max_frames` first and
run windows no longer than that.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)

from .base_identity import identity_metadata
from .checkpoint_io import CheckpointError, atomic_save_safetensors, open_tensors
from .keymaps import diffsynth
from .keymaps.identify import identify_checkpoint

SVD_TRAINED_FRAMES = 25  # SVD-XT's training clip length: ids 0..24 are the positions it knows
PINGPONG_HALF_PERIOD = 20  # ids past 24 reflect between 23 and 4 (period 40), as in the release
RELEASED_FRAMES = 128  # ExVideo-SVD-128f-v1

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
# Sub-modules of each spatio-temporal transformer that ExVideo trains (Sec. 3.3, Fig. 1).
_TRAINED_SUBMODULES = ("positional_table", "positional_conv.", "time_pos_embed.", "temporal_transformer_blocks.")
_NEW_MODULE_NAMES = ("positional_table", "positional_conv")


def _is_new_tensor(name: str) -> bool:
    return any(part in _NEW_MODULE_NAMES for part in name.split("."))


def pingpong_position_ids(num_frames: int) -> torch.Tensor:
    """Position id per frame: 0..24 for frames 0..24, then a reflection inside SVD's trained range,
    23..4 (frames 25..44), 5..24 (45..64), 23..4 (65..84), ...; frames 125..127 get 5, 6, 7.

    ExVideo Sec. 3.2: the extended table is "initialized in a cyclic pattern, drawing upon the
    configurations of the pre-existing embeddings", so every frame starts at a position SVD knows.
    """
    ids = []
    for frame in range(num_frames):
        if frame < SVD_TRAINED_FRAMES:
            ids.append(frame)
            continue
        phase = (frame - SVD_TRAINED_FRAMES) % (2 * PINGPONG_HALF_PERIOD)
        if phase < PINGPONG_HALF_PERIOD:
            ids.append(SVD_TRAINED_FRAMES - 2 - phase)  # 23 down to 4
        else:
            ids.append(SVD_TRAINED_FRAMES - 2 * PINGPONG_HALF_PERIOD + phase)  # 5 up to 24
    return torch.tensor(ids, dtype=torch.long)


class ExVideoTransformerSpatioTemporal(TransformerSpatioTemporalModel):
    """diffusers' ``TransformerSpatioTemporalModel`` with ExVideo's trainable frame-position table
    (``positional_table``, ``[N, C]``) and identity-initialised 3D conv (``positional_conv``).

    Everything else (spatial block, temporal block, position MLP, time mixer) is the base module's,
    so the UNet's forward is unchanged. Built by :meth:`from_base`, which reuses the base module's
    sub-modules and creates the two new ones on the meta device (filled by the caller).
    """

    def __init__(self, num_frames: int, num_attention_heads: int, attention_head_dim: int, in_channels: int,
                 out_channels: int | None = None, num_layers: int = 1, cross_attention_dim: int | None = None):
        super().__init__(num_attention_heads, attention_head_dim, in_channels, out_channels, num_layers,
                         cross_attention_dim)
        if num_layers != 1:
            raise ValueError(
                "ExVideo extends SVD's spatio-temporal transformers, which have one temporal block each "
                f"(transformer_layers_per_block=1); found {num_layers}"
            )
        self.positional_table = torch.nn.Parameter(torch.empty(num_frames, in_channels))
        # padding_mode="reflect" as in the release (DiffSynth's TemporalAttentionBlock): the module runs
        # F.pad(reflect) then conv3d, so trained border weights see the same padding they were trained with
        self.positional_conv = torch.nn.Conv3d(self.inner_dim, self.inner_dim, kernel_size=3, padding=1,
                                               padding_mode="reflect")

    @classmethod
    def from_base(cls, base: TransformerSpatioTemporalModel, num_frames: int) -> "ExVideoTransformerSpatioTemporal":
        """An extended module sharing ``base``'s sub-modules; ``positional_table`` and
        ``positional_conv`` are on the meta device until filled."""
        temporal = base.temporal_transformer_blocks
        attn2 = getattr(temporal[0], "attn2", None) if len(temporal) else None
        with torch.device("meta"):
            module = cls(num_frames, base.num_attention_heads, base.attention_head_dim, base.in_channels,
                         base.out_channels, len(temporal), getattr(attn2, "cross_attention_dim", None))
        for name, child in base.named_children():
            if name not in _NEW_MODULE_NAMES:  # re-extending keeps the base's modules, not the old conv
                setattr(module, name, child)
        module.gradient_checkpointing = base.gradient_checkpointing
        if hasattr(base, "_gradient_checkpointing_func"):
            module._gradient_checkpointing_func = base._gradient_checkpointing_func
        return module.train(base.training)

    @property
    def max_frames(self) -> int:
        return self.positional_table.shape[0]

    def _check_clip(self, num_frames: int, height: int, width: int) -> None:
        if num_frames > self.max_frames:
            raise ValueError(
                f"this ExVideo extension's frame-position table holds {self.max_frames} frames; found a clip of "
                f"{num_frames} frames. Run clips (or rolling-sampler windows) of at most {self.max_frames} frames "
                "(longvid_core.exvideo.max_frames(unet) tells the limit)"
            )
        if min(num_frames, height, width) < 2:
            raise ValueError(
                "ExVideo's reflect-padded 3x3x3 conv needs at least 2 frames and 2x2 latent pixels at every "
                f"spatio-temporal transformer; found {num_frames} frame(s) of {height}x{width} here "
                "(use more frames or a larger picture)"
            )

    def _conv_then_temporal(self, temporal_block, hidden_states, time_context, batch_size, num_frames, height, width):
        # ExVideo Fig. 1: the conv sees each video's frames as its own [C, T, H, W] volume, so videos
        # batched together (cond and uncond) do not mix; "no alteration ... before training" (Sec. 3.2)
        # comes from the identity init, not from a residual.
        channels = hidden_states.shape[-1]
        volume = hidden_states.reshape(batch_size, num_frames, height, width, channels).permute(0, 4, 1, 2, 3)
        volume = self.positional_conv(volume)  # Conv3d(padding_mode="reflect"): F.pad(reflect) + conv3d
        hidden_states = volume.permute(0, 2, 3, 4, 1).reshape(batch_size * num_frames, height * width, channels)
        return temporal_block(hidden_states, num_frames=num_frames, encoder_hidden_states=time_context)

    def forward(self, hidden_states, encoder_hidden_states=None, image_only_indicator=None, return_dict: bool = True):
        batch_frames, _, height, width = hidden_states.shape
        num_frames = image_only_indicator.shape[-1]
        self._check_clip(num_frames, height, width)
        batch_size = batch_frames // num_frames

        # as in diffusers: the temporal block cross-attends to each video's first-frame context
        time_context = encoder_hidden_states
        time_context_first_timestep = time_context[None, :].reshape(
            batch_size, num_frames, -1, time_context.shape[-1]
        )[:, 0]
        time_context = time_context_first_timestep[:, None].broadcast_to(
            batch_size, height * width, time_context.shape[-2], time_context.shape[-1]
        )
        time_context = time_context.reshape(batch_size * height * width, -1, time_context.shape[-1])

        residual = hidden_states
        hidden_states = self.norm(hidden_states)
        inner_dim = hidden_states.shape[1]
        hidden_states = hidden_states.permute(0, 2, 3, 1).reshape(batch_frames, height * width, inner_dim)
        hidden_states = self.proj_in(hidden_states)

        # ExVideo Sec. 3.2: a trainable table replaces time_proj(arange(F)); SVD's position MLP follows
        position = self.time_pos_embed(self.positional_table[:num_frames].to(hidden_states.dtype))
        position = position.repeat(batch_size, 1)[:, None, :]

        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing
        for block, temporal_block in zip(self.transformer_blocks, self.temporal_transformer_blocks):
            if checkpointing:
                hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, None, encoder_hidden_states, None
                )
            else:
                hidden_states = block(hidden_states, encoder_hidden_states=encoder_hidden_states)

            temporal_path = functools.partial(
                self._conv_then_temporal, temporal_block,
                batch_size=batch_size, num_frames=num_frames, height=height, width=width,
            )
            hidden_states_mix = hidden_states + position
            if checkpointing:
                # the 3x3x3 conv's activations are what long clips cost in training (Sec. 3.3)
                hidden_states_mix = self._gradient_checkpointing_func(temporal_path, hidden_states_mix, time_context)
            else:
                hidden_states_mix = temporal_path(hidden_states_mix, time_context)
            hidden_states = self.time_mixer(
                x_spatial=hidden_states, x_temporal=hidden_states_mix, image_only_indicator=image_only_indicator
            )

        hidden_states = self.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch_frames, height, width, inner_dim).permute(0, 3, 1, 2).contiguous()
        output = hidden_states + residual
        if not return_dict:
            return (output,)
        return TransformerTemporalModelOutput(sample=output)


# ---------------------------------------------------------------------------------------------
# Building and inspecting extended UNets


def _unet_of(model) -> torch.nn.Module:
    unet = getattr(model, "unet", model)
    if not isinstance(unet, torch.nn.Module):
        raise TypeError(f"expected an SVDModel or its UNet (a torch.nn.Module); found {type(model).__name__}")
    return unet


def temporal_transformers(unet: torch.nn.Module) -> dict[str, TransformerSpatioTemporalModel]:
    """Every spatio-temporal transformer of ``unet`` (16 in SVD), by module name, in UNet order.

    Raises ValueError when there is none: the model is not an SVD UNet.
    """
    found = {name: m for name, m in unet.named_modules() if isinstance(m, TransformerSpatioTemporalModel)}
    if not found:
        raise ValueError(
            "expected an SVD UNet (diffusers UNetSpatioTemporalConditionModel with spatio-temporal "
            f"transformers, 16 in SVD); found a {type(unet).__name__} with none"
        )
    return found


def max_frames(model) -> int | None:
    """The longest clip the model accepts: the ExVideo table length, or None for plain SVD (no
    hard limit; SVD was trained on 14 or 25 frames)."""
    unet = _unet_of(model)
    lengths = [m.max_frames for m in unet.modules() if isinstance(m, ExVideoTransformerSpatioTemporal)]
    return min(lengths) if lengths else None


def _unet_config(unet: torch.nn.Module) -> Mapping:
    config = getattr(unet, "config", None)
    if config is None or "block_out_channels" not in config:
        raise ValueError(
            f"expected an SVD UNet with a diffusers config (block_out_channels, ...); found {type(unet).__name__}"
        )
    return config


def _swap_in(unet: torch.nn.Module, num_frames: int) -> list[ExVideoTransformerSpatioTemporal]:
    """Put an extended module (new tensors on meta) in place of every spatio-temporal transformer
    that is not already extended to ``num_frames``; all are built before any is swapped, so an
    error leaves the UNet as it was. Returns the newly built modules."""
    planned = []
    for name, module in temporal_transformers(unet).items():
        if isinstance(module, ExVideoTransformerSpatioTemporal) and module.max_frames == num_frames:
            continue
        parent_name, _, leaf = name.rpartition(".")
        parent = unet.get_submodule(parent_name) if parent_name else unet
        planned.append((parent, leaf, ExVideoTransformerSpatioTemporal.from_base(module, num_frames)))
    for parent, leaf, extended in planned:
        setattr(parent, leaf, extended)
    return [extended for _, _, extended in planned]


def _reference_parameter(module: torch.nn.Module) -> torch.nn.Parameter:
    return module.proj_in.weight


def extend_unet(model, num_frames: int = RELEASED_FRAMES) -> torch.nn.Module:
    """Extend an SVD UNet (or an SVDModel's) in place to ``num_frames`` frames, freshly initialised
    as in ExVideo Sec. 3.2; returns the UNet. The result reproduces the base model for clips of up
    to 25 frames. New tensors get the UNet's device and dtype (on the meta device they stay meta,
    which is enough for names and shapes, see :func:`diffsynth_state_dict`)."""
    unet = _unet_of(model)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; found {num_frames}")
    present = max_frames(unet)
    if present is not None:
        raise ValueError(f"this UNet is already ExVideo-extended (to {present} frames); extend a base SVD UNet")
    _unet_config(unet)
    for module in _swap_in(unet, num_frames):
        ref = _reference_parameter(module)
        positions = pingpong_position_ids(num_frames).to(ref.device)
        # the raw sinusoid SVD feeds its position MLP: the block's own time_proj
        # (diffusers Timesteps(C, flip_sin_to_cos=True, downscale_freq_shift=0)), so ids 0..24 match exactly
        table = module.time_proj(positions)
        conv_weight = torch.zeros(module.inner_dim, module.inner_dim, 3, 3, 3, device=ref.device, dtype=ref.dtype)
        conv_weight[:, :, 1, 1, 1] = torch.eye(module.inner_dim, device=ref.device, dtype=ref.dtype)
        fresh = {
            "positional_table": table.to(ref.dtype),
            "positional_conv.weight": conv_weight,
            "positional_conv.bias": torch.zeros(module.inner_dim, device=ref.device, dtype=ref.dtype),
        }
        _fill_new_tensors(module, fresh)
    return unet


def _fill_new_tensors(module: ExVideoTransformerSpatioTemporal, tensors: Mapping[str, torch.Tensor]) -> None:
    requires_grad = _reference_parameter(module).requires_grad
    for name, value in tensors.items():
        owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
        setattr(owner, name.rpartition(".")[2], torch.nn.Parameter(value, requires_grad=requires_grad))


def extension_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Exactly what ExVideo trains (Sec. 3.3), under LongVid's names: in each spatio-temporal
    transformer the temporal block, the position MLP, ``positional_table`` and ``positional_conv``."""
    unet = _unet_of(model)
    if max_frames(unet) is None:
        raise ValueError("expected an ExVideo-extended UNet (extend_unet or load_svd(..., extension=...)); "
                         "found a plain SVD UNet")
    out = {}
    for name, module in temporal_transformers(unet).items():
        for sub, param in module.named_parameters():
            if sub.startswith(_TRAINED_SUBMODULES):
                out[f"{name}.{sub}"] = param
    return out


def extension_state_dict(model) -> dict[str, torch.Tensor]:
    """The extension's tensors under LongVid's names (what the LongVid layout file holds)."""
    return {name: param.detach() for name, param in extension_parameters(model).items()}


def diffsynth_state_dict(model) -> dict[str, torch.Tensor]:
    """The extension's tensors under DiffSynth-Studio's names (``blocks.{N}.*``) without writing a
    file; works on the meta device (names and shapes of a full-size export)."""
    unet = _unet_of(model)
    return diffsynth.from_ours(extension_state_dict(unet), _unet_config(unet))


def _architecture(unet: torch.nn.Module) -> dict:
    config = _unet_config(unet)
    return {key: config[key] for key in _ARCHITECTURE_KEYS if key in config}


def base_unet_identity(model) -> str:
    """A hash of the base UNet's architecture: its config (:data:`_ARCHITECTURE_KEYS`) and every
    base tensor's name and shape (ExVideo's new tensors excluded), not the weights' values (hashing
    1.5 B parameters would cost seconds on every save and load)."""
    unet = _unet_of(model)
    shapes = [
        (name, list(tensor.shape)) for name, tensor in unet.state_dict().items()
        if not _is_new_tensor(name)
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
    unet = _unet_of(model)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; found {layout!r}")
    frames = max_frames(unet)
    if frames is None:
        raise ValueError("expected an ExVideo-extended UNet to save; found a plain SVD UNet (extend_unet first)")
    if _reference_parameter(next(iter(temporal_transformers(unet).values()))).is_meta:
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
        META_TRAINED: json.dumps(list(_TRAINED_SUBMODULES)),
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
    unet = _unet_of(model)
    transformers = temporal_transformers(unet)
    config = _unet_config(unet)
    ref = _reference_parameter(next(iter(transformers.values())))
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
    _swap_in(unet, frames)
    result = unet.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: tensors with no place in the UNet: {result.unexpected_keys[:5]}")
    for param in extension_parameters(unet).values():
        param.requires_grad_(requires_grad)
    left_empty = [n for n, p in extension_parameters(unet).items() if p.is_meta]
    if left_empty:
        raise CheckpointError(f"{path}: the extension did not fill {left_empty[:5]}")
    return model
