"""What a single-file checkpoint holds, judged from its tensor names: the names each key map reads."""

from __future__ import annotations

from .diffsynth import is_diffsynth_extension


def identify_checkpoint(keys) -> str:
    """A short name for what a single-file checkpoint holds, judged from its tensor names."""
    keys = list(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if is_diffsynth_extension(keys):
        return "an ExVideo extension (DiffSynth layout)"
    if any(k.endswith(".positional_table") for k in keys):
        return "an ExVideo extension (LongVid layout)"
    if any(".lora_A." in k or ".lora_down." in k for k in keys):
        return "a LoRA (load it beside its base: load_svd(base, lora=file))"
    if has("model.diffusion_model."):
        if any(k.startswith("model.diffusion_model.") and ".time_stack." in k for k in keys):
            return "svd"
        if has("conditioner.embedders.1."):
            return "an SDXL checkpoint"
        if has("cond_stage_model.model."):
            return "an SD2 checkpoint"
        if has("cond_stage_model."):
            return "an SD1.5 checkpoint"
        return "an image (non-video) UNet checkpoint"
    if has("first_stage_model.") or has("encoder.down.") or has("decoder.up."):
        return "a VAE-only file"
    if has("down_blocks.") or has("encoder.layers."):
        return "a single diffusers component (use the diffusers folder with unet/, vae/, image_encoder/)"
    return f"an unknown file (first tensors: {keys[:3]})"


__all__ = ["identify_checkpoint"]
