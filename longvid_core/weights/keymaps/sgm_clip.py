"""SVD's image encoder: OpenCLIP visual-tower names <-> transformers ``CLIPVisionModelWithProjection``.

The SGM file holds OpenCLIP's ViT-H/14 image tower under ``conditioner.embedders.0.open_clip.model.
visual.*`` (:data:`PREFIX`; keys here are given without it). Differences the map handles:

- OpenCLIP fuses q/k/v into ``attn.in_proj_weight [3D, D]`` / ``in_proj_bias [3D]`` (``nn.
  MultiheadAttention``, rows in q, k, v order); transformers has separate ``q_proj/k_proj/v_proj``.
- OpenCLIP projects with ``x @ proj`` (``proj [D, P]``); transformers' ``visual_projection`` is a
  bias-free Linear, ``weight [P, D] = proj.T``.
- the rest is renaming (``conv1`` -> ``patch_embedding``, ``ln_pre`` -> ``pre_layrnorm``, ...).

:func:`to_ours` and :func:`from_ours` are exact inverses. :func:`is_ignored_sgm_key` names the rest of
the SGM file's ``conditioner.*`` tensors, which SVD does not use.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import torch

PREFIX = "conditioner.embedders.0.open_clip.model.visual."

_OPEN_CLIP_MODEL = "conditioner.embedders.0.open_clip.model."
# The autoencoder SGM's training code used to encode the conditioning frame
# (VideoPredictionEmbedderWithEncoder). ComfyUI, diffusers and LongVid encode that frame with
# first_stage_model's encoder instead, so this copy is never loaded.
_TRAINING_FRAME_ENCODER = "conditioner.embedders.3.encoder."


def is_ignored_sgm_key(full_key: str) -> bool:
    """True for tensors of an SVD SGM file that SVD inference does not use and a loader should skip
    quietly: OpenCLIP's text-side leftovers (``token_embedding``, ``positional_embedding``,
    ``ln_final``, ``text_projection``, ``logit_scale`` under ``conditioner.embedders.0.open_clip.model.``
    but not ``visual.``) and the second autoencoder under ``conditioner.embedders.3.encoder.``."""
    if full_key.startswith(_OPEN_CLIP_MODEL) and not full_key.startswith(PREFIX):
        return True
    return full_key.startswith(_TRAINING_FRAME_ENCODER)


# Renames that are one tensor to one tensor with the same values. {i} = transformer block index.
_RENAMES = [
    ("conv1.weight", "vision_model.embeddings.patch_embedding.weight"),
    ("class_embedding", "vision_model.embeddings.class_embedding"),
    ("positional_embedding", "vision_model.embeddings.position_embedding.weight"),
    ("ln_pre.{param}", "vision_model.pre_layrnorm.{param}"),
    ("ln_post.{param}", "vision_model.post_layernorm.{param}"),
    ("transformer.resblocks.{i}.ln_1.{param}", "vision_model.encoder.layers.{i}.layer_norm1.{param}"),
    ("transformer.resblocks.{i}.ln_2.{param}", "vision_model.encoder.layers.{i}.layer_norm2.{param}"),
    ("transformer.resblocks.{i}.attn.out_proj.{param}", "vision_model.encoder.layers.{i}.self_attn.out_proj.{param}"),
    ("transformer.resblocks.{i}.mlp.c_fc.{param}", "vision_model.encoder.layers.{i}.mlp.fc1.{param}"),
    ("transformer.resblocks.{i}.mlp.c_proj.{param}", "vision_model.encoder.layers.{i}.mlp.fc2.{param}"),
]
_IN_PROJ = "transformer.resblocks.{i}.attn.in_proj_{param}"
_QKV = tuple(f"vision_model.encoder.layers.{{i}}.self_attn.{name}_proj.{{param}}" for name in ("q", "k", "v"))
_PROJ = ("proj", "visual_projection.weight")
# transformers' position_ids is arange(num_positions): derived, not a weight (older transformers
# versions saved it in state dicts, so it is accepted and skipped).
_DERIVED_OURS_KEYS = {"vision_model.embeddings.position_ids"}


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{i}"), r"(?P<i>\d+)").replace(re.escape("{param}"), r"(?P<param>weight|bias)")
    return re.compile(pattern + r"\Z")


_RENAME_RULES = [(_compile(sgm), sgm, _compile(ours), ours) for sgm, ours in _RENAMES]
_IN_PROJ_RE = _compile(_IN_PROJ)
_QKV_RES = [_compile(t) for t in _QKV]


def _raise_unknown(unknown: list[str], layout: str) -> None:
    shown = ", ".join(unknown[:8]) + (f" (and {len(unknown) - 8} more)" if len(unknown) > 8 else "")
    raise ValueError(f"unknown {layout} image-encoder keys: {shown}")


def to_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP visual state (keys without prefix) -> ``CLIPVisionModelWithProjection`` state."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key in state.keys():
        if key == _PROJ[0]:
            # contiguous so the state can be saved as safetensors; bit-identical values
            out[_PROJ[1]] = state[key].t().contiguous()
            continue
        if m := _IN_PROJ_RE.match(key):
            fused = state[key]
            if fused.shape[0] % 3:
                raise ValueError(f"{key}: expected 3 x width rows (q, k, v); found shape {tuple(fused.shape)}")
            # clone: q, k and v become independent tensors rather than views of one storage
            for template, part in zip(_QKV, fused.chunk(3, dim=0)):
                out[template.format(**m.groupdict())] = part.clone()
            continue
        for sgm_re, _, _, ours_t in _RENAME_RULES:
            if m := sgm_re.match(key):
                out[ours_t.format(**m.groupdict())] = state[key]
                break
        else:
            unknown.append(key)
    if unknown:
        _raise_unknown(unknown, "OpenCLIP")
    return out


def from_ours(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``CLIPVisionModelWithProjection`` state -> OpenCLIP visual state (keys without prefix)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key in state.keys():
        if key in _DERIVED_OURS_KEYS:
            continue
        if key == _PROJ[1]:
            out[_PROJ[0]] = state[key].t().contiguous()
            continue
        if m := _QKV_RES[0].match(key):
            fields = m.groupdict()
            parts = []
            for template in _QKV:
                name = template.format(**fields)
                if name not in state:
                    raise ValueError(f"expected {name} next to {key} (q, k and v are fused in OpenCLIP); it is missing")
                parts.append(state[name])
            out[_IN_PROJ.format(**fields)] = torch.cat(parts, dim=0)
            continue
        if _QKV_RES[1].match(key) or _QKV_RES[2].match(key):
            continue  # fused with q_proj above
        for _, sgm_t, ours_re, _ in _RENAME_RULES:
            if m := ours_re.match(key):
                out[sgm_t.format(**m.groupdict())] = state[key]
                break
        else:
            unknown.append(key)
    if unknown:
        _raise_unknown(unknown, "transformers CLIP vision")
    return out


# OpenCLIP computes heads = width // head_width, and head_width is a model-config value the
# tensors do not record. Every OpenCLIP ViT tower SVD-style models use is listed here (from
# open_clip's model_configs: B 768/64, L 1024/64, H 1280/80, g 1408/88, bigG 1664/104);
# other widths fall back to OpenCLIP's default head_width of 64.
_KNOWN_OPEN_CLIP_HEADS = {768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16}
_DEFAULT_HEAD_WIDTH = 64


def _heads_for_width(width: int) -> int:
    if width in _KNOWN_OPEN_CLIP_HEADS:
        return _KNOWN_OPEN_CLIP_HEADS[width]
    if width % _DEFAULT_HEAD_WIDTH:
        raise ValueError(
            f"OpenCLIP image tower of width {width}: the head count is not stored in the file and the width is "
            f"neither a known OpenCLIP tower ({sorted(_KNOWN_OPEN_CLIP_HEADS)}) nor a multiple of OpenCLIP's "
            f"default head width {_DEFAULT_HEAD_WIDTH}; pass num_attention_heads explicitly"
        )
    return width // _DEFAULT_HEAD_WIDTH


def _shape(shapes: Mapping[str, tuple], key: str) -> tuple:
    try:
        return tuple(shapes[key])
    except KeyError:
        raise ValueError(f"OpenCLIP image tower: expected tensor {PREFIX}{key}; it is missing") from None


def config_from_shapes(shapes: Mapping[str, tuple], num_attention_heads: int | None = None) -> dict:
    """``CLIPVisionConfig(**kwargs)`` arguments read from OpenCLIP visual tensor shapes (keys
    without prefix). The head count is not in the shapes: see ``_KNOWN_OPEN_CLIP_HEADS`` (ViT-H/14,
    SVD's tower, gets 16) or pass ``num_attention_heads``."""
    width, channels, patch_h, patch_w = _shape(shapes, "conv1.weight")
    if patch_h != patch_w:
        raise ValueError(f"OpenCLIP image tower: expected square patches; found conv1 kernel {patch_h}x{patch_w}")
    positions = _shape(shapes, "positional_embedding")[0]
    grid = math.isqrt(positions - 1)
    if grid * grid != positions - 1:
        raise ValueError(
            f"OpenCLIP image tower: expected 1 class + grid x grid patch positions; found {positions} positions"
        )
    layers = len({m.group(1) for k in shapes.keys() if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))})
    if layers == 0:
        raise ValueError("OpenCLIP image tower: expected transformer.resblocks.* tensors; found none")
    heads = num_attention_heads if num_attention_heads is not None else _heads_for_width(width)
    return {
        "hidden_size": width,
        "intermediate_size": _shape(shapes, "transformer.resblocks.0.mlp.c_fc.weight")[0],
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_channels": channels,
        "image_size": grid * patch_h,
        "patch_size": patch_h,
        "projection_dim": _shape(shapes, "proj")[1],
        "hidden_act": "gelu",  # OpenCLIP's ViT-H uses exact (erf) GELU, not CLIP's QuickGELU
        "layer_norm_eps": 1e-5,
    }
