"""The one key map between DiffSynth-Studio's ExVideo-SVD extension layout and LongVid's UNet.

The released ExVideo-SVD file (``ExVideo-SVD-128f-v1``) holds only SVD's temporal transformer
blocks, under DiffSynth-Studio's flat names ``blocks.{N}.{suffix}`` (DiffSynth keeps SVD's UNet as
one ``torch.nn.ModuleList`` called ``blocks``, ``diffsynth/models/svd_unet.py``). LongVid's names
are diffusers' (``down_blocks.0.attentions.0.temporal_transformer_blocks.0.norm_in.weight``) plus
the two ExVideo additions, ``positional_table`` and ``positional_conv`` (see
:mod:`longvid_core.networks.exvideo`).

Block numbers. DiffSynth numbers every entry of its flat list, including the weightless stack
helpers that carry skip connections (``PushBlock``, ``PopBlock``, ``PopMixBlock``). Walking SVD's
blocks in UNet order (the order of :func:`longvid_core.weights.keymaps.sgm_unet.block_table`), each SGM
sub-block takes these entries of the list:

- a resnet: ``ResnetBlock, PushBlock, TemporalResnetBlock, PopMixBlock`` (4), with a ``PopBlock``
  before it in the up path (5);
- a spatio-temporal transformer: ``PushBlock, AttentionBlock, PushBlock, TemporalAttentionBlock,
  PopMixBlock`` (5); the temporal block, the one ExVideo extends, is the 4th (offset 3);
- a down or up sampler: 1;
- every block of the down path (SGM ``input_blocks.k``) ends with a ``PushBlock`` (its skip
  connection).

For SVD-XT this gives 7, 17, 29, 39, 51, 61, 83, 113, 123, 133, 144, 154, 164, 175, 185, 195, the
numbers of the released file (the tests check this against the release's list). Other
architectures, such as the tiny test configs, which DiffSynth itself cannot build, are numbered by
the same rule, so a tiny file in this layout is what DiffSynth's numbering scheme would give.

Only SVD's layout of one temporal block per spatio-temporal transformer
(``transformer_layers_per_block == 1``) can be written this way, since DiffSynth gives each
transformer one ``TemporalAttentionBlock``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import torch

from . import sgm_unet

# (DiffSynth suffix, LongVid suffix under the spatio-temporal transformer's prefix); exact leaf names.
_T = "temporal_transformer_blocks.0."
_LEAVES: tuple[tuple[str, str], ...] = (
    ("positional_embedding.embeddings", "positional_table"),
    ("positional_conv.weight", "positional_conv.weight"),
    ("positional_conv.bias", "positional_conv.bias"),
    ("positional_embedding_proj.0.weight", "time_pos_embed.linear_1.weight"),
    ("positional_embedding_proj.0.bias", "time_pos_embed.linear_1.bias"),
    ("positional_embedding_proj.2.weight", "time_pos_embed.linear_2.weight"),
    ("positional_embedding_proj.2.bias", "time_pos_embed.linear_2.bias"),
    ("norm_in.weight", _T + "norm_in.weight"),
    ("norm_in.bias", _T + "norm_in.bias"),
    ("act_fn_in.proj.weight", _T + "ff_in.net.0.proj.weight"),
    ("act_fn_in.proj.bias", _T + "ff_in.net.0.proj.bias"),
    ("ff_in.weight", _T + "ff_in.net.2.weight"),
    ("ff_in.bias", _T + "ff_in.net.2.bias"),
    ("norm1.weight", _T + "norm1.weight"),
    ("norm1.bias", _T + "norm1.bias"),
    ("attn1.to_q.weight", _T + "attn1.to_q.weight"),
    ("attn1.to_k.weight", _T + "attn1.to_k.weight"),
    ("attn1.to_v.weight", _T + "attn1.to_v.weight"),
    ("attn1.to_out.weight", _T + "attn1.to_out.0.weight"),
    ("attn1.to_out.bias", _T + "attn1.to_out.0.bias"),
    ("norm2.weight", _T + "norm2.weight"),
    ("norm2.bias", _T + "norm2.bias"),
    ("attn2.to_q.weight", _T + "attn2.to_q.weight"),
    ("attn2.to_k.weight", _T + "attn2.to_k.weight"),
    ("attn2.to_v.weight", _T + "attn2.to_v.weight"),
    ("attn2.to_out.weight", _T + "attn2.to_out.0.weight"),
    ("attn2.to_out.bias", _T + "attn2.to_out.0.bias"),
    ("norm_out.weight", _T + "norm3.weight"),
    ("norm_out.bias", _T + "norm3.bias"),
    ("act_fn_out.proj.weight", _T + "ff.net.0.proj.weight"),
    ("act_fn_out.proj.bias", _T + "ff.net.0.proj.bias"),
    ("ff_out.weight", _T + "ff.net.2.weight"),
    ("ff_out.bias", _T + "ff.net.2.bias"),
)
_TO_OURS = dict(_LEAVES)
_FROM_OURS = {ours: theirs for theirs, ours in _LEAVES}

TABLE_SUFFIX = "positional_embedding.embeddings"
_KEY_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TABLE_RE = re.compile(r"^blocks\.(\d+)\.positional_embedding\.embeddings$")

# DiffSynth list entries per SGM sub-block (see the module doc), keyed by (SGM part, kind).
_ENTRIES = {
    ("input_blocks", "resnets"): 4,
    ("input_blocks", "attentions"): 5,
    ("input_blocks", "downsamplers"): 1,
    ("middle_block", "resnets"): 4,
    ("middle_block", "attentions"): 5,
    ("output_blocks", "resnets"): 5,
    ("output_blocks", "attentions"): 5,
    ("output_blocks", "upsamplers"): 1,
}
_TEMPORAL_OFFSET = 3  # PushBlock, AttentionBlock, PushBlock, -> TemporalAttentionBlock
_SKIP_PUSH_PART = "input_blocks"
_KIND_RE = re.compile(r"^(?:down_blocks\.\d+|mid_block|up_blocks\.\d+)\.(resnets|attentions|downsamplers|upsamplers)\.")


class TemporalBlock(NamedTuple):
    """One extended temporal transformer: its DiffSynth block number and its two prefixes."""

    index: int  # DiffSynth ``blocks.{index}``
    sgm_prefix: str  # e.g. "input_blocks.1.1." (under model.diffusion_model.)
    our_prefix: str  # e.g. "down_blocks.0.attentions.0."


def temporal_blocks(config: Mapping) -> list[TemporalBlock]:
    """Every spatio-temporal transformer of this UNet architecture, in UNet order, with its
    DiffSynth block number (numbering rule in the module doc)."""
    if any(n != 1 for n in _as_tuple(config.get("transformer_layers_per_block", 1))):
        raise ValueError(
            "the DiffSynth ExVideo layout holds one temporal block per spatio-temporal transformer "
            f"(SVD's transformer_layers_per_block=1); found {config['transformer_layers_per_block']}"
        )
    rows = []
    for entry in sgm_unet.block_table(config):
        match = _KIND_RE.match(entry[1])
        if match is None:  # conv_in, time embeddings, output head: outside DiffSynth's block list
            continue
        sgm_block = ".".join(entry[0].split(".")[:2])  # "input_blocks.4", "middle_block.1", ...
        rows.append((sgm_block, match.group(1), entry[0], entry[1]))
    out = []
    slot = 0
    for sgm_block, group in itertools.groupby(rows, key=lambda row: row[0]):
        part = sgm_block.split(".")[0]
        for _, kind, sgm_prefix, our_prefix in group:
            if kind == "attentions":
                out.append(TemporalBlock(slot + _TEMPORAL_OFFSET, sgm_prefix, our_prefix))
            slot += _ENTRIES[(part, kind)]
        if part == _SKIP_PUSH_PART:
            slot += 1
    return out


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _describe(config: Mapping) -> str:
    return (
        f"block_out_channels={tuple(config['block_out_channels'])}, "
        f"layers_per_block={config['layers_per_block']}"
    )


def to_ours(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """DiffSynth ``blocks.{N}.*`` names -> LongVid names. Values are read once each.

    Raises ValueError naming the block numbers this architecture has when the file's do not fit.
    """
    by_index = {block.index: block for block in temporal_blocks(config)}
    out: dict[str, torch.Tensor] = {}
    unknown_blocks, unknown_leaves = set(), []
    for key in state.keys():
        match = _KEY_RE.match(key)
        if match is None or match.group(2) not in _TO_OURS:
            unknown_leaves.append(key)
            continue
        block = by_index.get(int(match.group(1)))
        if block is None:
            unknown_blocks.add(int(match.group(1)))
            continue
        out[block.our_prefix + _TO_OURS[match.group(2)]] = state[key]
    if unknown_blocks:
        raise ValueError(
            f"expected DiffSynth temporal blocks {sorted(by_index)} (a UNet with {_describe(config)}); "
            f"found blocks {sorted(unknown_blocks)}, so the extension was made for a different UNet architecture"
        )
    if unknown_leaves:
        raise ValueError(
            f"expected only DiffSynth ExVideo tensors blocks.N.<suffix> with the {len(_LEAVES)} suffixes of a "
            f"temporal block (e.g. {TABLE_SUFFIX}, norm_in.weight); found {len(unknown_leaves)} other tensor "
            f"name(s): {sorted(unknown_leaves)[:5]}"
        )
    return out


def from_ours(state: Mapping[str, torch.Tensor], config: Mapping) -> dict[str, torch.Tensor]:
    """LongVid extension names -> DiffSynth ``blocks.{N}.*`` names; exact inverse of :func:`to_ours`."""
    blocks = temporal_blocks(config)
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key in state.keys():
        block = next((b for b in blocks if key.startswith(b.our_prefix)), None)
        leaf = key[len(block.our_prefix):] if block is not None else None
        if block is None or leaf not in _FROM_OURS:
            unknown.append(key)
            continue
        out[f"blocks.{block.index}.{_FROM_OURS[leaf]}"] = state[key]
    if unknown:
        raise ValueError(
            f"{len(unknown)} tensor(s) have no place in the DiffSynth ExVideo layout (it holds the temporal "
            f"transformer blocks, their position MLP, table and conv only): {sorted(unknown)[:5]}"
        )
    return out


def is_diffsynth_extension(keys: Iterable[str]) -> bool:
    """True for a file in DiffSynth's ExVideo layout: it has ``blocks.{N}.positional_embedding.embeddings``
    (the release is recognised by ``blocks.185.…``; any block number is accepted so tiny files work)."""
    return any(_TABLE_RE.match(k) for k in keys)


def frames_in(shapes: Mapping[str, tuple]) -> int:
    """The frame count of a DiffSynth ExVideo file: the tables' first dimension (all must agree)."""
    counts = {tuple(shape)[0] for key, shape in shapes.items() if _TABLE_RE.match(key)}
    if len(counts) != 1:
        raise ValueError(
            f"expected every blocks.N.{TABLE_SUFFIX} to have the same number of frames; found {sorted(counts)}"
        )
    return counts.pop()
