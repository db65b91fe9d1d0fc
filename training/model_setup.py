"""The model the trainer trains: SVD with its trainable weights chosen and cast, and the UNet
behind SVD's preconditioning as the module accelerate wraps."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig


def load_model(config: TrainConfig, device):
    """The SVD model with the trainable weights in float32 and the frozen ones in ``--precision``.

    Everything is loaded in float32 first so that a fresh extension (``extend_unet``) or one read
    from a file is exact; then what is not trained is cast down. Returns ``(model, trainable)`` with
    ``trainable`` the parameters by UNet name, in a fixed order (the optimizer's order).
    """
    import torch

    from longvid_core import load_svd
    from longvid_core.networks import exvideo
    from longvid_core.weights.loading import resolve_dtype

    model = load_svd(config.base, extension=config.extension or None, device=device, dtype=torch.float32,
                     attention=config.attention)
    check_finite_weights(model, config)
    model.unet.requires_grad_(False)
    if config.parameter_set == "exvideo":
        table = exvideo.max_frames(model)
        if table is None:
            exvideo.extend_unet(model, config.exvideo_frames)
        elif config.clip_frames() > table:
            raise ValueError(f"--extension holds a frame-position table of {table} frames; clips of "
                             f"{config.clip_frames()} frames do not fit")
        trainable = exvideo.extension_parameters(model)
    elif config.parameter_set == "lora":
        trainable = {}  # LoRA layers only, on the base (and its frozen --extension)
        table = exvideo.max_frames(model)
        if table is not None and config.clip_frames() > table:
            raise ValueError(f"--extension holds a frame-position table of {table} frames; clips of "
                             f"{config.clip_frames()} frames do not fit")
    else:
        if exvideo.max_frames(model) is not None:
            raise ValueError("--mode full trains a plain SVD UNet (saved with save_svd); drop --extension")
        trainable = dict(model.unet.named_parameters())
    if config.lora:
        trainable = {**trainable, **add_lora(model.unet, config, trained_whole=trainable)}
    for p in trainable.values():
        p.requires_grad_(True)

    weight_dtype = resolve_dtype(config.precision)
    trained = {id(p) for p in trainable.values()}
    for p in model.unet.parameters():
        if id(p) not in trained:
            p.data = p.data.to(weight_dtype)
    model.image_encoder.to(weight_dtype)
    # nn.Module.to, not ModelMixin.to: the latter warns about fp32-kept modules this VAE has none of
    torch.nn.Module.to(model.vae, dtype=torch.float32 if config.vae_fp32 else weight_dtype)
    if config.gradient_checkpointing:
        model.unet.enable_gradient_checkpointing()  # after extending, so ExVideo's blocks get it too
    model.unet.train()
    return model, trainable


def check_finite_weights(model, config: TrainConfig) -> None:
    """A NaN in a weight makes every loss NaN, which looks like a learning-rate problem; name the
    damaged file instead, before any step."""
    from longvid_core.networks.nonfinite import module_tensors, nonfinite_tensors

    from training.user_errors import UserError

    damaged = nonfinite_tensors(module_tensors({"unet": model.unet, "vae": model.vae,
                                                "image_encoder": model.image_encoder}))
    if damaged:
        source = "--base or --extension" if config.extension else "--base"
        raise UserError(f"{source}: expected finite weights, found NaN/Inf in {', '.join(damaged)} (a damaged "
                        "download or conversion: replace the file)")


def add_lora(unet, config: TrainConfig, trained_whole) -> dict:
    """LoRA layers (peft) on the ``--lora-targets`` layers, leaving out layers whose weights are
    trained whole anyway (an extension's temporal blocks): their parameters by file name, in order."""
    import torch

    from longvid_core.weights import lora

    owners = {name.rpartition(".")[0] for name in trained_whole}
    modules = lora.resolve_targets(unet, config.lora_targets, exclude=owners)
    with torch.random.fork_rng(devices=[]):  # the same initial A on every process, whatever its rank
        torch.manual_seed(config.seed)
        return lora.add_lora_layers(unet, modules, config.lora_rank, config.lora_scale_alpha)


def make_denoiser_module(unet):
    """The UNet behind SVD's EDM preconditioning as one ``nn.Module``: what DDP/DeepSpeed wrap, so
    that the gradient hooks see exactly the forward pass the loss used."""
    import torch

    from longvid_core.networks.conditioning import SVDCond
    from longvid_core.networks.denoiser import svd_denoise

    class SVDDenoiser(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, x, sigma, image_embeds, concat_latent, added_time_ids):
            return svd_denoise(self.unet, x, sigma, SVDCond(image_embeds, concat_latent, added_time_ids))

    return SVDDenoiser(unet)


def as_denoiser(module):
    """The (wrapped) denoiser module as the denoiser contract ``denoise(x, sigma, cond) -> x0``."""
    def denoise(x, sigma, cond):
        return module(x, sigma, cond.image_embeds, cond.concat_latent, cond.added_time_ids)
    return denoise


__all__ = ["load_model", "add_lora", "make_denoiser_module", "as_denoiser"]
