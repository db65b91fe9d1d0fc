"""NaN and Inf caught where they first appear, with the likely cause named.

One NaN in a weight, or one fp16 overflow, turns every later value into NaN: the video decodes to
black, and on a CPU each NaN call runs many times slower. So the run checks every denoiser output
and every decoded window (one reduction each, nothing next to a UNet call) and stops at the first
non-finite one. Only then are the weights searched, to say which tensor is damaged, if any.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch


class NonFiniteError(FloatingPointError):
    """A denoiser call or a decode produced NaN or Inf; the message names the likely cause."""


def module_tensors(modules: dict) -> Iterator[tuple[str, torch.Tensor]]:
    """``(prefix.name, tensor)`` for every weight and buffer of ``{prefix: module}`` (None: skipped)."""
    for prefix, module in modules.items():
        if module is not None:
            for name, tensor in (*module.named_parameters(), *module.named_buffers()):
                yield f"{prefix}.{name}", tensor


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]], limit: int = 3) -> list[str]:
    """Names (``unet.down_blocks.0...``) of up to ``limit`` of the ``(name, tensor)`` pairs holding NaN or Inf."""
    found = []
    for name, tensor in named:
        if tensor.is_floating_point() and not tensor.is_meta and not torch.isfinite(tensor).all():
            found.append(name)
            if len(found) >= limit:
                break
    return found


def likely_cause(modules: dict, dtype: torch.dtype, inputs_finite: bool = True) -> str:
    """Why values went non-finite: damaged weights (named), non-finite inputs, or fp16 overflow."""
    damaged = nonfinite_tensors(module_tensors(modules))
    if damaged:
        return (f"the weights are damaged: {', '.join(damaged)} hold NaN/Inf (a broken download or conversion, or a "
                "bad extension / LoRA file): replace the file")
    if not inputs_finite:
        return ("the conditioning is not finite (the first frame, its encoding or a setting such as the noise "
                "augmentation): check the image and the settings")
    if dtype == torch.float16:
        return "the weights are finite, so a value overflowed fp16's range: run in bf16 or fp32 (--dtype / dtype)"
    return (f"the weights are finite and the values are {str(dtype).replace('torch.', '')}: an extreme setting (cfg, "
            "LoRA strength) or a model that does not fit these inputs")


def _model_modules(model) -> dict:
    return {name: getattr(model, name, None) for name in ("unet", "vae", "image_encoder")}


def check_decoded(vae, pixels: torch.Tensor, frames: tuple[int, int]) -> None:
    """Raise :class:`NonFiniteError` if ``vae``'s decoded ``pixels`` of frames ``[start, end)`` hold NaN/Inf."""
    if torch.isfinite(pixels).all():
        return
    cause = likely_cause({"vae": vae}, next(vae.parameters()).dtype)
    raise NonFiniteError(f"decoding frames {frames[0]}..{frames[1] - 1} gave NaN/Inf: {cause}")


class FiniteCheckedDenoiser:
    """``denoise`` (the denoiser contract) that raises :class:`NonFiniteError` at the first call
    whose prediction holds NaN/Inf. A caching denoiser's ``window`` hint is passed on."""

    def __init__(self, denoise, model):
        self.denoise = denoise
        self.model = model
        self.calls = 0
        if hasattr(denoise, "window"):
            self.window = denoise.window

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        out = self.denoise(x, sigma, cond)
        self.calls += 1
        if not torch.isfinite(out).all():
            inputs = [x, cond.image_embeds, cond.concat_latent] if hasattr(cond, "concat_latent") else [x]
            inputs_finite = all(bool(torch.isfinite(t).all()) for t in inputs if isinstance(t, torch.Tensor))
            level = sigma.float().max().item()
            cause = likely_cause(_model_modules(self.model), self.model.dtype, inputs_finite)
            raise NonFiniteError(f"denoiser call {self.calls} (sigma up to {level:.4g}) gave NaN/Inf: {cause}")
        return out


__all__ = ["FiniteCheckedDenoiser", "NonFiniteError", "check_decoded", "likely_cause", "module_tensors",
           "nonfinite_tensors"]
