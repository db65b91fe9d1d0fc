"""The one key map between SVD's SGM single-file UNet layout and LongVid's UNet.

SGM (Stability's generative-models, the layout of ``svd_xt.safetensors`` and what ComfyUI loads)
stores the UNet under ``model.diffusion_model.`` as ``input_blocks`` / ``middle_block`` /
``output_blocks`` lists. LongVid's UNet uses diffusers' module names
(``UNetSpatioTemporalConditionModel``). Keys here are given WITHOUT the ``PREFIX``.

The architecture is read from the tensors (:func:`config_from_shapes`), so a tiny checkpoint and
the real 1.5 B parameter one go through the same code.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

import torch

PREFIX = "model.diffusion_model."

# Sub-module renames inside one SGM block (longest prefix wins). The temporal halves keep the
# same sub-names as the spatial halves in SGM, under ``time_stack``.
_RESNET_RENAMES = (
    ("in_layers.0.", "spatial_res_block.norm1."),
    ("in_layers.2.", "spatial_res_block.conv1."),
    ("emb_layers.1.", "spatial_res_block.time_emb_proj."),
    ("out_layers.0.", "spatial_res_block.norm2."),
    ("out_layers.3.", "spatial_res_block.conv2."),
    ("skip_connection.", "spatial_res_block.conv_shortcut."),
    ("time_stack.in_layers.0.", "temporal_res_block.norm1."),
    ("time_stack.in_layers.2.", "temporal_res_block.conv1."),
    ("time_stack.emb_layers.1.", "temporal_res_block.time_emb_proj."),
    ("time_stack.out_layers.0.", "temporal_res_block.norm2."),
    ("time_stack.out_layers.3.", "temporal_res_block.conv2."),
    ("time_mixer.", "time_mixer."),
)
_TRANSFORMER_RENAMES = (
    ("norm.", "norm."),
    ("proj_in.", "proj_in."),
    ("proj_out.", "proj_out."),
    ("transformer_blocks.", "transformer_blocks."),
    ("time_stack.", "temporal_transformer_blocks."),
    ("time_pos_embed.0.", "time_pos_embed.linear_1."),
    ("time_pos_embed.2.", "time_pos_embed.linear_2."),
    ("time_mixer.", "time_mixer."),
)
_TOP_LEVEL = {
    "input_blocks.0.0.": "conv_in.",
    "time_embed.0.": "time_embedding.linear_1.",
    "time_embed.2.": "time_embedding.linear_2.",
    "label_emb.0.0.": "add_embedding.linear_1.",
    "label_emb.0.2.": "add_embedding.linear_2.",
    "out.0.": "conv_norm_out.",
    "out.2.": "conv_out.",
}


def block_table(config: Mapping) -> list[tuple[str, str, tuple]]:
    """(sgm block prefix, our block prefix, sub-renames) for every block of this architecture."""
    levels = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    attn_down = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    attn_up = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    table: list[tuple[str, str, tuple]] = [(k, v, (("", ""),)) for k, v in _TOP_LEVEL.items()]
    index = 1
    for level in range(levels):
        for j in range(layers):
            table.append((f"input_blocks.{index}.0.", f"down_blocks.{level}.resnets.{j}.", _RESNET_RENAMES))
            if attn_down[level]:
                table.append(
                    (f"input_blocks.{index}.1.", f"down_blocks.{level}.attentions.{j}.", _TRANSFORMER_RENAMES)
                )
            index += 1
        if level < levels - 1:
            table.append((f"input_blocks.{index}.0.op.", f"down_blocks.{level}.downsamplers.0.conv.", (("", ""),)))
            index += 1
    table += [
        ("middle_block.0.", "mid_block.resnets.0.", _RESNET_RENAMES),
        ("middle_block.1.", "mid_block.attentions.0.", _TRANSFORMER_RENAMES),
        ("middle_block.2.", "mid_block.resnets.1.", _RESNET_RENAMES),
    ]
    index = 0
    for level in range(levels):
        for j in range(layers + 1):
            table.append((f"output_blocks.{index}.0.", f"up_blocks.{level}.resnets.{j}.", _RESNET_RENAMES))
            slot = 1
            if attn_up[level]:
                table.append(
                    (f"output_blocks.{index}.1.", f"up_blocks.{level}.attentions.{j}.", _TRANSFORMER_RENAMES)
                )
                slot = 2
            if j == layers and level < levels - 1:
                table.append(
                    (f"output_blocks.{index}.{slot}.conv.", f"up_blocks.{level}.upsamplers.0.conv.", (("", ""),))
                )
            index += 1
    return table


def _rename(key: str, table: list[tuple[str, str, tuple]], reverse: bool) -> str | None:
    src_i, dst_i = (1, 0) if reverse else (0, 1)
    for entry in table:
        block_src, block_dst = entry[src_i], entry[dst_i]
        if not key.startswith(block_src):
            continue
        rest = key[len(block_src):]
        best = None
        for sub in entry[2]:
            if rest.startswith(sub[src_i]) and (best is None or len(sub[src_i]) > len(best[src_i])):
                best = sub
        if best is not None:
            return block_dst + best[dst_i] + rest[len(best[src_i]):]
    return None


def _convert(state: Mapping[str, torch.Tensor], config: Mapping, reverse: bool) -> dict[str, torch.Tensor]:
    table = block_table(config)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key in state.keys():
        new = _rename(key, table, reverse)
        if new is None:
            unknown.append(key)
            continue
        out[new] = state[key]
    if unknown:
        side = "LongVid" if reverse else "SGM"
        raise ValueError(
            f"{len(unknown)} {side} UNet tensor name(s) do not belong to an SVD UNet with "
            f"block_out_channels={tuple(config['block_out_channels'])}: {sorted(unknown)[:8]}"
        )
    return out


def to_ours(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """SGM names (prefix stripped) -> LongVid/diffusers names. Values are read once each."""
    return _convert(state, config, reverse=False)


def from_ours(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """LongVid/diffusers names -> SGM names (prefix stripped); exact inverse of :func:`to_ours`."""
    return _convert(state, config, reverse=True)


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := rx.match(k))})


def config_from_shapes(shapes: Mapping[str, tuple]) -> dict:
    """The UNet config (diffusers ``UNetSpatioTemporalConditionModel`` kwargs) read from tensors.

    Raises ValueError naming what is missing when the tensors are not an SVD UNet.
    """
    keys = list(shapes)
    if "input_blocks.0.0.weight" not in shapes or "label_emb.0.0.weight" not in shapes:
        raise ValueError(
            "expected SVD UNet tensors (input_blocks.0.0.weight, label_emb.0.0.weight, ...); "
            f"found {len(keys)} tensors starting with {sorted(keys)[:3]}"
        )
    downsamplers = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.weight$")
    input_indices = _indices(keys, r"input_blocks\.(\d+)\.")
    if downsamplers:
        layers = downsamplers[0] - 1
    else:
        layers = max(input_indices)
    levels = len(downsamplers) + 1
    if layers < 1 or 1 + levels * layers + (levels - 1) != max(input_indices) + 1:
        raise ValueError(
            f"UNet input blocks {input_indices} do not form an SVD UNet with {levels} levels "
            f"(downsamplers at {downsamplers})"
        )
    channels, attn_down = [], []
    for level in range(levels):
        first = 1 + level * (layers + 1)
        channels.append(shapes[f"input_blocks.{first}.0.in_layers.2.weight"][0])
        attn_down.append(f"input_blocks.{first}.1.proj_in.weight" in shapes)
    attn_up = [f"output_blocks.{level * (layers + 1)}.1.proj_in.weight" in shapes for level in range(levels)]
    if attn_up != attn_down[::-1]:
        raise ValueError(f"attention layout of down blocks {attn_down} and up blocks {attn_up} do not mirror")
    cross_dims = [shape[1] for k, shape in shapes.items() if k.endswith("transformer_blocks.0.attn2.to_k.weight")]
    if not cross_dims:
        raise ValueError("expected cross-attention tensors (transformer_blocks.0.attn2.to_k.weight); found none")
    transformer_depth = _indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    label_in = shapes["label_emb.0.0.weight"][1]
    time_dim = shapes["time_embed.0.weight"][0]
    if time_dim != 4 * channels[0]:
        raise ValueError(f"expected a time embedding of width 4*{channels[0]}; found {time_dim}")
    for c in channels:
        if c % 64:
            raise ValueError(f"expected channel widths that are multiples of 64 (heads of 64 channels); found {channels}")
    return {
        "in_channels": shapes["input_blocks.0.0.weight"][1],
        "out_channels": shapes["out.2.weight"][0],
        "block_out_channels": tuple(channels),
        "layers_per_block": layers,
        "down_block_types": tuple(
            "CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attn_down
        ),
        "up_block_types": tuple(
            "CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in attn_up
        ),
        "cross_attention_dim": cross_dims[0],
        "transformer_layers_per_block": len(transformer_depth),
        "num_attention_heads": tuple(c // 64 for c in channels),
        "addition_time_embed_dim": label_in // 3,
        "projection_class_embeddings_input_dim": label_in,
    }
