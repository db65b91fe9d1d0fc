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

Files (see docs/extension_formats.md, read and written by :mod:`longvid_core.weights.exvideo_file`): the released ``ExVideo-SVD-128f-v1`` in DiffSynth-Studio's
layout (:mod:`longvid_core.weights.keymaps.diffsynth`) and LongVid's own layout (LongVid's names plus
metadata). Both hold only the extension and are applied on top of a base SVD(-XT) checkpoint:
``load_svd(base, extension=file)`` -> :func:`apply_extension_file`.

Clips longer than the table are refused (``ValueError`` naming the limit): positions past N were
never trained, so there is no honest value to give them. Samplers ask :func:`max_frames` first and
run windows no longer than that.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
from diffusers.models.transformers.transformer_temporal import (
    TransformerSpatioTemporalModel,
    TransformerTemporalModelOutput,
)

SVD_TRAINED_FRAMES = 25  # SVD-XT's training clip length: ids 0..24 are the positions it knows
PINGPONG_HALF_PERIOD = 20  # ids past 24 reflect between 23 and 4 (period 40), as in the release
RELEASED_FRAMES = 128  # ExVideo-SVD-128f-v1

# Sub-modules of each spatio-temporal transformer that ExVideo trains (Sec. 3.3, Fig. 1).
TRAINED_SUBMODULES = ("positional_table", "positional_conv.", "time_pos_embed.", "temporal_transformer_blocks.")
_NEW_MODULE_NAMES = ("positional_table", "positional_conv")


def is_new_tensor(name: str) -> bool:
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
                "(longvid_core.networks.exvideo.max_frames(unet) tells the limit)"
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


def unet_of(model) -> torch.nn.Module:
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
    unet = unet_of(model)
    lengths = [m.max_frames for m in unet.modules() if isinstance(m, ExVideoTransformerSpatioTemporal)]
    return min(lengths) if lengths else None


def unet_config(unet: torch.nn.Module) -> Mapping:
    config = getattr(unet, "config", None)
    if config is None or "block_out_channels" not in config:
        raise ValueError(
            f"expected an SVD UNet with a diffusers config (block_out_channels, ...); found {type(unet).__name__}"
        )
    return config


def swap_in(unet: torch.nn.Module, num_frames: int) -> list[ExVideoTransformerSpatioTemporal]:
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


def reference_parameter(module: torch.nn.Module) -> torch.nn.Parameter:
    return module.proj_in.weight


def extend_unet(model, num_frames: int = RELEASED_FRAMES) -> torch.nn.Module:
    """Extend an SVD UNet (or an SVDModel's) in place to ``num_frames`` frames, freshly initialised
    as in ExVideo Sec. 3.2; returns the UNet. The result reproduces the base model for clips of up
    to 25 frames. New tensors get the UNet's device and dtype (on the meta device they stay meta,
    which is enough for names and shapes, see :func:`diffsynth_state_dict`)."""
    unet = unet_of(model)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1; found {num_frames}")
    present = max_frames(unet)
    if present is not None:
        raise ValueError(f"this UNet is already ExVideo-extended (to {present} frames); extend a base SVD UNet")
    unet_config(unet)
    for module in swap_in(unet, num_frames):
        ref = reference_parameter(module)
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
    requires_grad = reference_parameter(module).requires_grad
    for name, value in tensors.items():
        owner = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
        setattr(owner, name.rpartition(".")[2], torch.nn.Parameter(value, requires_grad=requires_grad))


def extension_parameters(model) -> dict[str, torch.nn.Parameter]:
    """Exactly what ExVideo trains (Sec. 3.3), under LongVid's names: in each spatio-temporal
    transformer the temporal block, the position MLP, ``positional_table`` and ``positional_conv``."""
    unet = unet_of(model)
    if max_frames(unet) is None:
        raise ValueError("expected an ExVideo-extended UNet (extend_unet or load_svd(..., extension=...)); "
                         "found a plain SVD UNet")
    out = {}
    for name, module in temporal_transformers(unet).items():
        for sub, param in module.named_parameters():
            if sub.startswith(TRAINED_SUBMODULES):
                out[f"{name}.{sub}"] = param
    return out


def extension_state_dict(model) -> dict[str, torch.Tensor]:
    """The extension's tensors under LongVid's names (what the LongVid layout file holds)."""
    return {name: param.detach() for name, param in extension_parameters(model).items()}


__all__ = ["ExVideoTransformerSpatioTemporal", "RELEASED_FRAMES", "SVD_TRAINED_FRAMES", "extend_unet",
           "extension_parameters", "extension_state_dict", "max_frames", "pingpong_position_ids",
           "temporal_transformers"]
