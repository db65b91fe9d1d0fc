"""SVD's spatio-temporal UNet with a noise level per frame.

The blocks are diffusers' (``UNetSpatioTemporalConditionModel``), so weights and numerics match
the reference implementation. What differs is the top of the forward pass: diffusers embeds one
timestep per video and repeats it over frames; here the timestep embedding (and the added
time-id embedding) is computed per (video, frame) row, which is all a per-frame noise level needs
because every block after the embedding already works per (batch*frame) row (PA-VDM Sec. 3.1,
"per-frame noise levels").
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from diffusers import UNetSpatioTemporalConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel

from ..shapes import check_unet_inputs

# PyTorch's fused SDPA kernels on NVIDIA fail when batch*heads exceeds 65,535
# (pytorch issue 142228). SVD's temporal attention has one sequence per latent pixel, so real
# sizes pass that limit; ComfyUI slices at 2**15 for the same reason.
SDPA_BATCH_LIMIT = 2**15


class BatchSlicedAttnProcessor:
    """Scaled-dot-product attention run over slices of the batch.

    Attention, projections and norms act on each batch row independently, so slicing is exact;
    it only keeps batch*heads under the fused kernels' limit.
    """

    def __init__(self, batch_limit: int = SDPA_BATCH_LIMIT, inner=None):
        self.batch_limit = batch_limit
        self.inner = inner if inner is not None else AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        rows = max(1, self.batch_limit // attn.heads)
        if hidden_states.shape[0] <= rows:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        outs = []
        for start in range(0, hidden_states.shape[0], rows):
            sl = slice(start, start + rows)
            outs.append(
                self.inner(
                    attn,
                    hidden_states[sl],
                    None if encoder_hidden_states is None else encoder_hidden_states[sl],
                    None if attention_mask is None else attention_mask[sl],
                    None if temb is None else temb[sl],
                    **kwargs,
                )
            )
        return torch.cat(outs)


class LongVidUNet(UNetSpatioTemporalConditionModel):
    """SVD UNet whose ``timestep`` may be ``[B]`` (one per video) or ``[B, F]`` (one per frame).

    ``encoder_hidden_states`` may likewise be ``[B, T, D]`` or per frame ``[B, F, T, D]``, and
    ``added_time_ids`` ``[B, n]`` or ``[B, F, n]``. Output: ``[B, F, C_out, h, w]``.
    The timestep is the model's noise input (``c_noise = ln(sigma)/4`` for SVD, see
    :mod:`longvid_core.networks.denoiser`).
    """

    def enable_gradient_checkpointing(self, *args, **kwargs) -> None:
        """diffusers' checkpointing, plus the temporal transformer blocks: diffusers' own
        TransformerSpatioTemporalModel checkpoints only its spatial blocks, so training SVD's
        weights (LoRA, full) kept the temporal blocks' activations, about 5x what ExVideo's
        blocks (which checkpoint both) keep per latent pixel x frame (training/memory/)."""
        super().enable_gradient_checkpointing(*args, **kwargs)
        for module in self.modules():
            if type(module) is TransformerSpatioTemporalModel:  # ExVideo's subclass does its own
                for block in module.temporal_transformer_blocks:
                    _checkpoint_forward(block)

    def set_attention_backend(self, backend: str = "sdpa", batch_limit: int = SDPA_BATCH_LIMIT) -> None:
        """``"sdpa"`` (PyTorch fused attention, batch-sliced) or ``"xformers"`` (optional extra)."""
        if backend == "sdpa":
            self.set_attn_processor(BatchSlicedAttnProcessor(batch_limit))
        elif backend == "xformers":
            try:
                import xformers  # noqa: F401
            except ImportError as exc:
                raise RuntimeError(
                    "attention backend 'xformers' needs the xformers package (pip install "
                    "'comfyui-longvid[xformers]'); found it missing"
                ) from exc
            self.enable_xformers_memory_efficient_attention()
        else:
            raise ValueError(f"attention backend must be 'sdpa' or 'xformers'; found {backend!r}")

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict: bool = False,
                deep_features: torch.Tensor | None = None, keep_deep_features: bool = False):
        """``deep_features`` (from an earlier call with ``keep_deep_features=True`` on the same
        frames): skip the deep blocks and run only the outermost ones on this input (DeepCache, Ma
        et al. 2023, arXiv 2312.00858). With ``keep_deep_features`` the output is
        ``(out, deep_features)``: what enters the last up block."""
        batch, frames = sample.shape[:2]
        timestep, encoder_hidden_states, added_time_ids = check_unet_inputs(
            sample, timestep, encoder_hidden_states, added_time_ids
        )
        rows = batch * frames

        # 1. embeddings, one row per (video, frame)
        t_emb = self.time_proj(timestep.reshape(rows)).to(dtype=sample.dtype)
        emb = self.time_embedding(t_emb)
        time_ids = added_time_ids.reshape(rows, -1)
        add_emb = self.add_time_proj(time_ids.flatten()).reshape(rows, -1).to(emb.dtype)
        emb = emb + self.add_embedding(add_emb)
        context = encoder_hidden_states.flatten(0, 1)

        # 2. the UNet body, unchanged from SVD
        hidden = self.conv_in(sample.flatten(0, 1))
        image_only_indicator = torch.zeros(batch, frames, dtype=hidden.dtype, device=hidden.device)
        skips = (hidden,)
        deep = None
        down_blocks = self.down_blocks if deep_features is None else self.down_blocks[:1]
        for block in down_blocks:
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            hidden, res = block(hidden_states=hidden, temb=emb, image_only_indicator=image_only_indicator, **kwargs)
            skips += res
        if deep_features is None:
            hidden = self.mid_block(
                hidden_states=hidden, temb=emb, encoder_hidden_states=context,
                image_only_indicator=image_only_indicator
            )
            up_blocks = list(enumerate(self.up_blocks))
        else:  # the last up block takes the first skips (conv_in's and the first down block's resnets')
            if deep_features.shape[0] != batch * frames:
                raise ValueError(f"deep_features hold {deep_features.shape[0]} frames; this call has "
                                 f"{batch * frames} (batch x frames): reuse them only on the same frames")
            skips = skips[: len(self.up_blocks[-1].resnets)]
            hidden = deep_features
            up_blocks = [(len(self.up_blocks) - 1, self.up_blocks[-1])]
        for i, block in up_blocks:
            if i == len(self.up_blocks) - 1 and keep_deep_features:
                deep = hidden
            res = skips[-len(block.resnets):]
            skips = skips[: -len(block.resnets)]
            # odd latent sizes: upsample to the skip connection's size instead of a fixed 2x
            upsample_size = skips[-1].shape[2:] if i < len(self.up_blocks) - 1 else None
            kwargs = {"encoder_hidden_states": context} if getattr(block, "has_cross_attention", False) else {}
            hidden = block(
                hidden_states=hidden,
                temb=emb,
                res_hidden_states_tuple=res,
                upsample_size=upsample_size,
                image_only_indicator=image_only_indicator,
                **kwargs,
            )
        hidden = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        out = hidden.reshape(batch, frames, *hidden.shape[1:])
        if keep_deep_features:
            return out, deep
        return out if not return_dict else (out,)


def _checkpoint_forward(block: torch.nn.Module) -> None:
    """Recompute ``block``'s activations in the backward pass when gradients are on (once; the
    module's names and weights are untouched)."""
    if getattr(block, "_longvid_checkpointed", False):
        return
    inner = block.forward

    def forward(*args, **kwargs):
        if torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(inner, *args, use_reentrant=False, **kwargs)
        return inner(*args, **kwargs)

    block.forward = forward
    block._longvid_checkpointed = True


def config_from_diffusers_shapes(shapes) -> dict:
    """UNet config read from tensors under diffusers' (= LongVid's) names, as in a diffusers
    folder's ``unet/*.safetensors``. The SGM counterpart is ``keymaps.sgm_unet.config_from_shapes``."""
    import re

    def indices(pattern):
        rx = re.compile(pattern)
        return sorted({int(m.group(1)) for k in shapes if (m := rx.match(k))})

    levels = indices(r"down_blocks\.(\d+)\.")
    if not levels or "conv_in.weight" not in shapes or "add_embedding.linear_1.weight" not in shapes:
        raise ValueError(
            "expected diffusers SVD UNet tensors (conv_in.weight, down_blocks.*, add_embedding.*); "
            f"found {sorted(shapes)[:3]}"
        )
    layers = len(indices(r"down_blocks\.0\.resnets\.(\d+)\."))
    channels = tuple(shapes[f"down_blocks.{i}.resnets.0.spatial_res_block.conv1.weight"][0] for i in levels)
    attn = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in shapes) for i in levels]
    cross = [s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight")]
    label_in = shapes["add_embedding.linear_1.weight"][1]
    return {
        "in_channels": shapes["conv_in.weight"][1],
        "out_channels": shapes["conv_out.weight"][0],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal" for a in attn),
        "up_block_types": tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal" for a in attn[::-1]),
        "cross_attention_dim": cross[0],
        "transformer_layers_per_block": len(indices(r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\.")),
        "num_attention_heads": tuple(c // 64 for c in channels),
        "addition_time_embed_dim": label_in // 3,
        "projection_class_embeddings_input_dim": label_in,
    }
