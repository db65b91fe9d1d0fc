"""SVD's temporal VAE: SGM single-file names <-> diffusers ``AutoencoderKLTemporalDecoder`` names.

The SGM file (``first_stage_model.*`` in ``svd_xt.safetensors``) holds an LDM encoder and SGM's
``VideoDecoder`` (an LDM decoder whose resnets carry a temporal ``time_stack`` blended in by a
learned ``mix_factor``, and whose ``conv_out`` carries a temporal ``time_mix_conv``). Keys here are
given WITHOUT the ``first_stage_model.`` prefix (:data:`PREFIX`).

Differences the map handles:

- LDM attention uses 1x1 convolutions (``q/k/v/proj_out``: ``[C, C, 1, 1]``); diffusers uses
  Linear layers (``[C, C]``). Weights are reshaped, values untouched.
- LDM numbers decoder levels from the highest resolution (``up.0`` runs last); diffusers numbers
  them in execution order (``up_blocks.0`` runs first): ``up.{i} <-> up_blocks.{n-1-i}``.
- LDM mid resnets are ``block_1``/``block_2``; diffusers' are ``resnets.0``/``resnets.1``.
- The SGM file has no ``quant_conv``; diffusers' model has one, so :func:`to_ours` adds it as the
  identity (1x1 conv, weight = eye, bias = 0) and :func:`from_ours` drops it again (refusing one
  that is not the identity, since the SGM layout could not represent it).

:func:`to_ours` and :func:`from_ours` are exact inverses: SGM -> ours -> SGM gives every tensor
back bit for bit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

PREFIX = "first_stage_model."
TEMPORAL_DECODER_MARKER = "decoder.mid.block_1.mix_factor"

# diffusers' TemporalDecoder builds its mid block with ``layers_per_block`` resnets, while the
# LDM/SGM layout always has exactly two (block_1, block_2): only this depth exists in both layouts.
_SUPPORTED_LAYERS_PER_BLOCK = 2

# ---------------------------------------------------------------------------------------------
# The name table. Placeholders: {i} {j} same index on both sides; {up} decoder level, reversed
# between the layouts; {mid} LDM's 1-based mid block number vs diffusers' 0-based index;
# {param} weight|bias. Rules marked ``conv1x1`` are LDM 1x1-conv attention weights.
# ---------------------------------------------------------------------------------------------
_RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                 "nin_shortcut": "conv_shortcut"}
# SGM's time_stack is an openaimodel ResBlock: in_layers = (GroupNorm, SiLU, Conv3d),
# out_layers = (GroupNorm, SiLU, Dropout, Conv3d).
_TIME_STACK_PARTS = {"in_layers.0": "norm1", "in_layers.2": "conv1", "out_layers.0": "norm2",
                     "out_layers.3": "conv2"}
_ATTN_PARTS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_CONV1X1 = {"q", "k", "v", "proj_out"}


def _build_rules() -> list[tuple[str, str, bool]]:
    rules: list[tuple[str, str, bool]] = []

    def add(sgm: str, ours: str, conv1x1: bool = False, param: bool = True):
        suffix = ".{param}" if param else ""
        rules.append((sgm + suffix, ours + suffix, conv1x1))

    for side in ("encoder", "decoder"):
        add(f"{side}.conv_in", f"{side}.conv_in")
        add(f"{side}.norm_out", f"{side}.conv_norm_out")
        add(f"{side}.conv_out", f"{side}.conv_out")
        for part, ours_part in _ATTN_PARTS.items():
            add(f"{side}.mid.attn_1.{part}", f"{side}.mid_block.attentions.0.{ours_part}",
                conv1x1=part in _ATTN_CONV1X1)

    for part, ours_part in _RESNET_PARTS.items():
        add(f"encoder.down.{{i}}.block.{{j}}.{part}", f"encoder.down_blocks.{{i}}.resnets.{{j}}.{ours_part}")
        add(f"encoder.mid.block_{{mid}}.{part}", f"encoder.mid_block.resnets.{{mid}}.{ours_part}")
        add(f"decoder.mid.block_{{mid}}.{part}",
            f"decoder.mid_block.resnets.{{mid}}.spatial_res_block.{ours_part}")
        add(f"decoder.up.{{up}}.block.{{j}}.{part}",
            f"decoder.up_blocks.{{up}}.resnets.{{j}}.spatial_res_block.{ours_part}")
    add("encoder.down.{i}.downsample.conv", "encoder.down_blocks.{i}.downsamplers.0.conv")
    add("decoder.up.{up}.upsample.conv", "decoder.up_blocks.{up}.upsamplers.0.conv")

    # temporal parts of SGM's VideoDecoder
    for part, ours_part in _TIME_STACK_PARTS.items():
        add(f"decoder.mid.block_{{mid}}.time_stack.{part}",
            f"decoder.mid_block.resnets.{{mid}}.temporal_res_block.{ours_part}")
        add(f"decoder.up.{{up}}.block.{{j}}.time_stack.{part}",
            f"decoder.up_blocks.{{up}}.resnets.{{j}}.temporal_res_block.{ours_part}")
    add("decoder.mid.block_{mid}.mix_factor", "decoder.mid_block.resnets.{mid}.time_mixer.mix_factor",
        param=False)
    add("decoder.up.{up}.block.{j}.mix_factor", "decoder.up_blocks.{up}.resnets.{j}.time_mixer.mix_factor",
        param=False)
    add("decoder.conv_out.time_mix_conv", "decoder.time_conv_out")
    return rules


_PLACEHOLDER_PATTERNS = {"i": r"\d+", "j": r"\d+", "up": r"\d+", "mid": r"\d+", "param": r"weight|bias"}


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, sub in _PLACEHOLDER_PATTERNS.items():
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{sub})")
    return re.compile(pattern + r"\Z")


_RULES = [(_compile(sgm), sgm, _compile(ours), ours, conv1x1) for sgm, ours, conv1x1 in _build_rules()]


def _num_levels(keys, encoder_re: str, decoder_re: str, layout: str) -> int:
    """Number of resolution levels, counted from encoder and decoder keys (which must agree)."""
    counts = []
    for pattern in (encoder_re, decoder_re):
        levels = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
        if levels:
            counts.append(max(levels) + 1)
    if not counts:
        raise ValueError(f"expected {layout} VAE keys ({encoder_re!r} / {decoder_re!r}); found none")
    if len(set(counts)) != 1:
        raise ValueError(f"{layout} VAE: encoder has {counts[0]} levels but decoder has {counts[1]}")
    return counts[0]


def _require_temporal_decoder(keys) -> None:
    if TEMPORAL_DECODER_MARKER not in keys:
        decoder_keys = sorted(k for k in keys if k.startswith("decoder."))
        found = (f"decoder keys like {decoder_keys[:3]} but no {TEMPORAL_DECODER_MARKER}"
                 if decoder_keys else "no decoder.* keys at all")
        raise ValueError(
            f"this VAE has no temporal decoder: expected SVD's video decoder (SGM VideoDecoder, marked by "
            f"{PREFIX}{TEMPORAL_DECODER_MARKER}); found {found}. An image VAE (SD/SDXL) cannot decode SVD video."
        )


def _raise_unknown(unknown: list[str], layout: str) -> None:
    shown = ", ".join(unknown[:8]) + (f" (and {len(unknown) - 8} more)" if len(unknown) > 8 else "")
    raise ValueError(f"unknown {layout} temporal-VAE keys: {shown}")


def to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SGM ``first_stage_model`` state (keys without prefix) -> ``AutoencoderKLTemporalDecoder`` state.

    Reads each value once; attention weights become reshaped views, nothing else is copied.
    """
    keys = list(state.keys())
    _require_temporal_decoder(keys)
    levels = _num_levels(keys, r"encoder\.down\.(\d+)\.", r"decoder\.up\.(\d+)\.", "SGM")
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key in keys:
        for sgm_re, _, _, ours_t, conv1x1 in _RULES:
            if m := sgm_re.match(key):
                fields = m.groupdict()
                if "up" in fields:
                    fields["up"] = str(levels - 1 - int(fields["up"]))
                if "mid" in fields:
                    fields["mid"] = str(int(fields["mid"]) - 1)
                value = state[key]
                if conv1x1 and fields.get("param") == "weight":
                    value = value.reshape(value.shape[0], -1)
                out[ours_t.format(**fields)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        _raise_unknown(unknown, "SGM")
    # The SGM autoencoder has no quant_conv; diffusers' applies one between encoder and posterior.
    reference = out["encoder.conv_out.weight"]
    moments = reference.shape[0]
    eye = torch.eye(moments, dtype=reference.dtype, device=reference.device)
    out["quant_conv.weight"] = eye.reshape(moments, moments, 1, 1)
    out["quant_conv.bias"] = torch.zeros(moments, dtype=reference.dtype, device=reference.device)
    return out


def from_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``AutoencoderKLTemporalDecoder`` state -> SGM ``first_stage_model`` state (keys without prefix).

    The identity ``quant_conv`` is dropped; a non-identity one raises ``ValueError``.
    """
    keys = list(state.keys())
    levels = _num_levels(keys, r"encoder\.down_blocks\.(\d+)\.", r"decoder\.up_blocks\.(\d+)\.", "diffusers")
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key in keys:
        if key in ("quant_conv.weight", "quant_conv.bias"):
            continue
        for _, sgm_t, ours_re, _, conv1x1 in _RULES:
            if m := ours_re.match(key):
                fields = m.groupdict()
                if "up" in fields:
                    fields["up"] = str(levels - 1 - int(fields["up"]))
                if "mid" in fields:
                    fields["mid"] = str(int(fields["mid"]) + 1)
                value = state[key]
                if conv1x1 and fields.get("param") == "weight":
                    value = value.reshape(*value.shape, 1, 1)
                out[sgm_t.format(**fields)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        _raise_unknown(unknown, "diffusers")
    _check_identity_quant_conv(state)
    _require_temporal_decoder(out.keys())
    return out


def _check_identity_quant_conv(state: Mapping[str, torch.Tensor]) -> None:
    if "quant_conv.weight" not in state:
        return
    weight, bias = state["quant_conv.weight"], state.get("quant_conv.bias")
    if weight.is_meta:
        return
    n = weight.shape[0]
    is_identity = weight.shape == (n, n, 1, 1) and torch.equal(
        weight.reshape(n, n), torch.eye(n, dtype=weight.dtype, device=weight.device)
    ) and (bias is None or not bias.any())
    if not is_identity:
        raise ValueError(
            "expected an identity quant_conv (weight = eye, bias = 0): SVD's SGM layout has no quant_conv, so "
            "only an identity one can be dropped; found a different quant_conv, which this layout cannot hold"
        )


def _shape(shapes: Mapping[str, tuple], key: str) -> tuple:
    try:
        return tuple(shapes[key])
    except KeyError:
        raise ValueError(f"SGM temporal VAE: expected tensor {PREFIX}{key}; it is missing") from None


def config_from_shapes(shapes: Mapping[str, tuple]) -> dict:
    """``AutoencoderKLTemporalDecoder(**config)`` arguments read from SGM tensor shapes (keys without
    prefix). Raises ``ValueError`` for a VAE without SVD's temporal decoder."""
    keys = list(shapes.keys())
    _require_temporal_decoder(keys)
    levels = _num_levels(keys, r"encoder\.down\.(\d+)\.", r"decoder\.up\.(\d+)\.", "SGM")
    block_out_channels = tuple(_shape(shapes, f"encoder.down.{i}.block.0.conv1.weight")[0] for i in range(levels))
    layers_per_block = len({m.group(1) for k in keys if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))})
    decoder_layers = len({m.group(1) for k in keys if (m := re.match(r"decoder\.up\.0\.block\.(\d+)\.", k))})
    mid_blocks = len({m.group(1) for k in keys if (m := re.match(r"decoder\.mid\.block_(\d+)\.", k))})
    if layers_per_block != _SUPPORTED_LAYERS_PER_BLOCK or decoder_layers != layers_per_block + 1 or mid_blocks != 2:
        raise ValueError(
            f"SGM temporal VAE: expected {_SUPPORTED_LAYERS_PER_BLOCK} resnets per encoder level, "
            f"{_SUPPORTED_LAYERS_PER_BLOCK + 1} per decoder level and 2 mid resnets (SVD's layout, the only one "
            f"diffusers' AutoencoderKLTemporalDecoder can hold); found {layers_per_block}, {decoder_layers} "
            f"and {mid_blocks}"
        )
    moments = _shape(shapes, "encoder.conv_out.weight")[0]
    latent_channels = _shape(shapes, "decoder.conv_in.weight")[1]
    if moments != 2 * latent_channels:
        raise ValueError(
            f"SGM temporal VAE: expected encoder.conv_out to give 2 x {latent_channels} latent channels "
            f"(mean and log-variance); found {moments}"
        )
    return {
        "in_channels": _shape(shapes, "encoder.conv_in.weight")[1],
        "out_channels": _shape(shapes, "decoder.conv_out.weight")[0],
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "block_out_channels": block_out_channels,
        "layers_per_block": layers_per_block,
        "latent_channels": latent_channels,
    }
