"""LongVid's trainer: ExVideo post-tuning, PA-VDM progressive-noise fine-tuning, full fine-tuning.

    python training/train.py --base svd_xt.safetensors --data-dir videos/ --output-dir runs/exvideo
    accelerate launch --config_file training/accelerate_deepspeed_zero2.yaml training/train.py \\
        --config training/example_config.toml

One optimizer step, per process and micro-batch:

1. a batch of clips (``training/data.py``) -> VAE latents (scaled) and SVD's conditioning from the
   clip's first frame, computed by ``longvid_core.conditioning.encode_image`` — the nodes' code —
   or read from the latent cache; a set fraction of batches are still images instead (LaVie
   Sec. 3.1 joint image-video training; see ``still_batch``);
2. noise levels (``training/noise_levels.py``): one sigma per video, or PA-VDM progressive levels
   per frame from the sampler's own table;
3. the EDM denoising loss (``longvid_core.losses``) of the UNet behind SVD's preconditioning;
4. backward through the trainable weights only (ExVideo's 16 temporal blocks, or every UNet
   weight), gradient clipping, AdamW, then the EMA.

Everything runs under accelerate: one GPU, DDP over GPUs and nodes, DeepSpeed ZeRO-2, or CPU
processes over gloo. Checkpoints (``training/checkpointing.py``) are written atomically and hold
everything a resumed run needs to continue exactly. Settings: ``training/config.py`` (``--help``).
Recipes: ``docs/training.md``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training import checkpointing  # noqa: E402  (light: no torch)
from training.config import TrainConfig, parse_config  # noqa: E402

if TYPE_CHECKING:  # heavy modules are imported where used, so that --help answers at once
    import torch

    from longvid_core.conditioning import SVDCond

# Sigmas of the fixed held-out evaluation batch: around the training distribution's bulk.
EVAL_SIGMAS = (0.05, 0.3, 1.0, 3.0, 10.0)
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def main(argv=None) -> int:
    try:
        config = parse_config(argv)  # --help and bad settings are answered here, before torch is imported
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return train(config)


# ---------------------------------------------------------------------------------------------
# Model


def load_model(config: TrainConfig, device):
    """The SVD model with the trainable weights in float32 and the frozen ones in ``--precision``.

    Everything is loaded in float32 first so that a fresh extension (``extend_unet``) or one read
    from a file is exact; then what is not trained is cast down. Returns ``(model, trainable)`` with
    ``trainable`` the parameters by UNet name, in a fixed order (the optimizer's order).
    """
    import torch

    from longvid_core import exvideo, load_svd

    model = load_svd(config.base, extension=config.extension or None, device=device, dtype=torch.float32,
                     attention=config.attention)
    model.unet.requires_grad_(False)
    if config.parameter_set == "exvideo":
        table = exvideo.max_frames(model)
        if table is None:
            exvideo.extend_unet(model, config.exvideo_frames)
        elif config.clip_frames() > table:
            raise ValueError(f"--extension holds a frame-position table of {table} frames; clips of "
                             f"{config.clip_frames()} frames do not fit")
        trainable = exvideo.extension_parameters(model)
    else:
        if exvideo.max_frames(model) is not None:
            raise ValueError("--mode full trains a plain SVD UNet (saved with save_svd); drop --extension")
        trainable = dict(model.unet.named_parameters())
    for p in trainable.values():
        p.requires_grad_(True)

    weight_dtype = getattr(torch, DTYPE_NAMES[config.precision])
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


def make_denoiser_module(unet):
    """The UNet behind SVD's EDM preconditioning as one ``nn.Module``: what DDP/DeepSpeed wrap, so
    that the gradient hooks see exactly the forward pass the loss used."""
    import torch

    from longvid_core.conditioning import SVDCond
    from longvid_core.denoiser import svd_denoise

    class SVDDenoiser(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, x, sigma, image_embeds, concat_latent, added_time_ids):
            return svd_denoise(self.unet, x, sigma, SVDCond(image_embeds, concat_latent, added_time_ids))

    return SVDDenoiser(unet)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Constant after a linear warm-up (ExVideo trains at a constant 1e-5)."""
    if config.lr_warmup_steps > 0 and step < config.lr_warmup_steps:
        return config.learning_rate * (step + 1) / config.lr_warmup_steps
    return config.learning_rate


# ---------------------------------------------------------------------------------------------
# Data -> latents and conditioning


@dataclass
class Batch:
    latents: torch.Tensor  # [B, F, 4, h, w] float32, VAE-scaled, on the device
    cond: SVDCond  # batch B, on the device
    kind: str  # "video" or "image"
    # --condition-frame video: each clip's own first frame as cond, for progressive rows without a clean
    # chunk. Those windows start a video (PA-VDM Sec. 3.2 initialization), and the sampler starts every
    # video from the image it is conditioned on; only later windows see a far-back conditioning image.
    # Encoded on first use (``start_cond``): only the batches that draw such a row need it.
    encode_start_cond: Callable[[], SVDCond] | None = None

    @cached_property
    def start_cond(self) -> SVDCond | None:
        return None if self.encode_start_cond is None else self.encode_start_cond()


def conditioning_values(config: TrainConfig, fps: float, score: float) -> tuple[int, int]:
    """SVD's fps and motion bucket conditioning for a clip (fixed, or measured from the clip)."""
    from training.data import motion_bucket_from_score

    fps_id = config.fps if config.fps >= 0 else max(1, round(fps))
    bucket = config.motion_bucket_id if config.motion_bucket_id >= 0 else motion_bucket_from_score(score)
    return fps_id, bucket


def encode_clip(model, config: TrainConfig, pixels):
    """``uint8 [F, H, W, 3]`` -> VAE-scaled latents ``[F, 4, h, w]`` float32, encoded as the nodes
    encode a video (``longvid_core.frames.encode_frames``: posterior mode times 0.18215)."""
    from longvid_core.frames import encode_frames

    return encode_frames(model.vae, pixels.float() / 255.0, batch_chunk=config.vae_batch)[0]


def encode_condition(model, config: TrainConfig, first_frame, fps_id: int, bucket: int, seed: int):
    """SVD's conditioning for a first frame ``uint8 [H, W, 3]``: ``encode_image``, as the nodes call it."""
    image = first_frame[None].float() / 255.0
    return model.encode_image(image, fps=fps_id, motion_bucket_id=bucket,
                              noise_aug_strength=config.noise_aug_strength, seed=seed)


def video_batch(model, config: TrainConfig, samples, cache, device, micro_step: int) -> Batch:
    import torch

    from longvid_core.conditioning import SVDCond, added_time_ids
    from training.determinism import derive_seed

    latents, conds, start_conds = [], [], []
    for sample in samples:
        fps_id, bucket = conditioning_values(config, sample.fps, sample.motion_score)
        seed = derive_seed(config.seed, "noise-aug", sample.index, micro_step) % (2**63)
        if sample.cached is not None:
            clip_latents = sample.cached["latents"].to(device)
            if config.noise_aug_strength == 0 and "concat_latent" in sample.cached:
                time_ids = added_time_ids(fps_id, bucket, 0.0, device=device)
                cond = SVDCond(sample.cached["image_embeds"][None].to(device),
                               sample.cached["concat_latent"][None].to(device), time_ids)
            else:
                cond = encode_condition(model, config, sample.condition_frame, fps_id, bucket, seed)
        else:
            clip_latents = encode_clip(model, config, sample.pixels)
            cond = encode_condition(model, config, sample.condition_frame, fps_id, bucket, seed)
            if cache is not None and sample.cache_key is not None:
                entry = {"latents": clip_latents, "first_frame": sample.pixels[0],
                         "image_embeds": cond.image_embeds[0]}
                if sample.condition_pixels is not None:
                    entry["condition_frame"] = sample.condition_pixels
                if config.noise_aug_strength == 0:
                    entry["concat_latent"] = cond.concat_latent[0]
                cache.save(sample.cache_key, entry, sample.fps, sample.motion_score)
        latents.append(clip_latents)
        conds.append(cond.to(device))
        if config.condition_frame == "video" and config.progressive:  # only progressive rows start videos
            start_conds.append(partial(lambda c: c, cond) if sample.conditioned_on_own_first_frame else
                               partial(encode_condition, model, config, sample.first_frame, fps_id, bucket, seed))

    def encode_start_cond() -> SVDCond:
        with torch.no_grad():
            return SVDCond.cat([make().to(device) for make in start_conds])

    return Batch(torch.stack(latents), SVDCond.cat(conds), "video", encode_start_cond if start_conds else None)


def still_batch(model, config: TrainConfig, stills, device, micro_step: int) -> Batch:
    """A still-image batch (LaVie Sec. 3.1 joint training, adapted to an image-conditioned model):
    each video is F copies of one picture, conditioned on that picture, with the motion bucket its
    (zero) motion gives. SVD's first frame *is* its conditioning, so "F independent images with
    per-frame conditioning" would only teach each frame to copy its own conditioning latent; a
    still clip instead asks the temporal layers to keep every frame as sharp and faithful as the
    picture, at the low-motion end of the bucket range, which is the image knowledge to keep.
    ``stills``: ``(picture uint8 [H, W, 3], fps, number)`` per video."""
    import torch

    from longvid_core.conditioning import SVDCond
    from training.determinism import derive_seed

    frames = config.clip_frames()
    latents, conds = [], []
    for picture, fps, number in stills:
        fps_id, bucket = conditioning_values(config, fps, 0.0)
        latent = encode_clip(model, config, picture[None])
        latents.append(latent.expand(frames, -1, -1, -1))
        seed = derive_seed(config.seed, "still-aug", number, micro_step) % (2**63)
        conds.append(encode_condition(model, config, picture, fps_id, bucket, seed).to(device))
    return Batch(torch.stack(latents), SVDCond.cat(conds), "image")


# ---------------------------------------------------------------------------------------------
# Loss of one batch


def batch_loss(denoiser, batch: Batch, config: TrainConfig, progressive, generator):
    """EDM denoising loss of ``batch``: sigma per video, or progressive levels per frame, or (a
    ``--progressive-rollout-fraction`` of video batches) after a rollout of the sampler itself."""
    import torch

    from longvid_core.losses import edm_denoising_loss
    from training.noise_levels import sample_sigmas

    latents = batch.latents
    count, frames = latents.shape[:2]
    conditioning_frames, noise_conditioning = None, False
    cond = batch.cond
    # Drawn only when rollouts are on, so that runs without them replay exactly as before.
    if progressive is not None and config.progressive_rollout_fraction > 0 and batch.kind == "video" and \
            bool(torch.rand((), generator=generator) < config.progressive_rollout_fraction):
        return rollout_batch_loss(denoiser, batch, config, progressive, generator)
    if progressive is not None:
        levels = progressive.sample(count, generator)
        latents = latents[:, progressive.window_frames(levels, frames)]
        sigma, conditioning_frames = levels.sigma, levels.conditioning_frames
        noise_conditioning = levels.conditioning_noised
        if levels.conditioning == 0 and batch.start_cond is not None:
            cond = batch.start_cond  # a window that starts a video: conditioned on its own first frame
    else:
        sigma = sample_sigmas(count, generator, config.sigma_sampling, config.p_mean, config.p_std,
                              config.sigma_min, config.sigma_max)[:, None].expand(count, frames)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    device = latents.device
    if config.conditioning_dropout > 0:
        cond = drop_conditioning(cond, config.conditioning_dropout, generator)
    return edm_denoising_loss(
        as_denoiser(denoiser), latents, sigma.to(device), noise.to(device), cond,
        conditioning_frames=None if conditioning_frames is None else conditioning_frames.to(device),
        noise_conditioning=noise_conditioning, weighting=config.loss_weighting,
    )


def rollout_batch_loss(denoiser, batch: Batch, config: TrainConfig, progressive, generator):
    """The loss after the model has run the sampler over the clip (``training/rollout.py``)."""
    import torch

    from training.rollout import rollout_loss

    periods = 1 + int(torch.randint(0, config.progressive_rollout_periods, (), generator=generator))
    noise = torch.randn(batch.latents.shape, generator=generator, dtype=torch.float32)
    cond = batch.cond
    if config.conditioning_dropout > 0:
        cond = drop_conditioning(cond, config.conditioning_dropout, generator)
    return rollout_loss(as_denoiser(denoiser), batch.latents.float(), cond, progressive, periods,
                        noise.to(batch.latents.device), weighting=config.loss_weighting)


def drop_conditioning(cond, fraction: float, generator):
    """``cond`` with each clip's image embedding and concat latent zeroed with probability ``fraction``.

    Zeroing both is exactly the sampler's unconditional branch (``SVDCond.negative``), so a model
    trained this way has an unconditional prediction for classifier-free guidance to move away from
    (Ho & Salimans 2022, Sec. 3.2: one network, conditioning dropped at random). Time ids stay.
    """
    from dataclasses import replace

    import torch

    dropped = torch.rand(cond.batch_size, generator=generator) < fraction
    negative = cond.negative()

    def pick(values, unconditional):
        return torch.where(dropped.to(values.device).view(-1, *([1] * (values.dim() - 1))), unconditional, values)

    return replace(cond, image_embeds=pick(cond.image_embeds, negative.image_embeds),
                   concat_latent=pick(cond.concat_latent, negative.concat_latent))


def as_denoiser(module):
    """The (wrapped) denoiser module as the denoiser contract ``denoise(x, sigma, cond) -> x0``."""
    def denoise(x, sigma, cond):
        return module(x, sigma, cond.image_embeds, cond.concat_latent, cond.added_time_ids)
    return denoise


def held_out_batch(model, config: TrainConfig, dataset, device) -> Batch:
    """The first clip (from frame 0) of the first videos that decode: a fixed batch for ``eval_loss``."""
    from training import data

    samples = []
    for number, video in enumerate(dataset.videos):
        try:
            pixels = data.read_clip(video.path, 0, dataset.spec.frames, config.frame_stride, config.height,
                                    config.width)
        except data.VideoError:
            continue
        samples.append(data.ClipSample(-1 - number, str(video.path), 0, video.fps / config.frame_stride,
                                       data.motion_score(pixels), pixels=pixels))
        if len(samples) == config.batch_size:
            return video_batch(model, config, samples, None, device, -1)
    raise ValueError(f"--eval-every: fewer than {config.batch_size} videos decode from frame 0")


def fixed_eval_loss(denoiser, eval_batch: Batch, config: TrainConfig) -> float:
    """Loss on the held-out batch at fixed sigmas with fixed noise: comparable across steps."""
    import torch

    from longvid_core.losses import edm_denoising_loss
    from training.determinism import generator

    latents = eval_batch.latents
    losses = []
    with torch.no_grad():
        for number, sigma in enumerate(EVAL_SIGMAS):
            noise = torch.randn(latents.shape, generator=generator(config.seed, "eval", number)).to(latents.device)
            result = edm_denoising_loss(as_denoiser(denoiser), latents, sigma, noise, eval_batch.cond,
                                        weighting=config.loss_weighting)
            losses.append(result.loss.item())
    return sum(losses) / len(losses)


# ---------------------------------------------------------------------------------------------
# Logging


class Log:
    """Lines on stdout (main process), ``train_log.jsonl`` and, optionally, TensorBoard."""

    def __init__(self, config: TrainConfig, accelerator):
        self.main = accelerator.is_main_process
        self.path = Path(config.output_dir) / "train_log.jsonl"
        self.writer = None
        if self.main and config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                self.info("warning: --tensorboard needs the tensorboard package (pip install tensorboard); "
                          "logging to train_log.jsonl only")
            else:
                self.writer = SummaryWriter(str(Path(config.output_dir) / "tensorboard"))

    def info(self, message: str) -> None:
        if self.main:
            print(message, flush=True)

    def warn_any_process(self, message: str, rank: int) -> None:
        print(f"[process {rank}] warning: {message}", file=sys.stderr, flush=True)

    def metrics(self, step: int, values: dict) -> None:
        if not self.main:
            return
        record = {"step": step, **values}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, step)
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        print(f"step {step}: {shown}", flush=True)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def peak_memory_mb(device) -> float:
    """CUDA: peak allocated memory; CPU: the process's peak resident set size."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# ---------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    micro_step: int = 0  # micro-batches done (per process; the same on every process)
    video_batches: int = 0  # video micro-batches consumed: the data position
    image_batches: int = 0  # micro-batches of --image-dir pictures consumed: that folder's position
    still_batches: int = 0  # still-image micro-batches trained on (from either source)


def export_names(config: TrainConfig) -> dict[str, str]:
    if config.parameter_set == "exvideo":
        return {"weights": "extension.safetensors", "ema": "extension_ema.safetensors",
                "diffsynth": "extension_diffsynth.safetensors"}
    return {"weights": "model.safetensors", "ema": "model_ema.safetensors"}


def write_exports(model, trainable, ema, config: TrainConfig, folder: Path) -> list[str]:
    """The files users load: the trained weights (and their EMA) in LongVid's formats."""
    from longvid_core import save_svd
    from longvid_core.exvideo import save_extension

    names = export_names(config)
    written = []

    def save(path):
        if config.parameter_set == "exvideo":
            save_extension(model, path, layout="longvid")
        else:
            save_svd(model, path)

    save(folder / names["weights"])
    written.append(names["weights"])
    if config.parameter_set == "exvideo" and config.save_diffsynth:
        save_extension(model, folder / names["diffsynth"], layout="diffsynth")
        written.append(names["diffsynth"])
    if ema is not None:
        with ema.applied(trainable):
            save(folder / names["ema"])
        written.append(names["ema"])
    return written


def save_checkpoint(ctx, progress: Progress) -> None:
    import torch

    from training.determinism import rng_state

    accelerator, config = ctx.accelerator, ctx.config
    save = checkpointing.Save(config.output_dir, progress.step)
    if save.already_done():
        return
    if accelerator.is_main_process:
        save.begin()
    accelerator.wait_for_everyone()
    exports = []
    if accelerator.is_main_process:
        exports = write_exports(ctx.model, ctx.trainable, ctx.ema, config, save.staging)
    if ctx.deepspeed:  # every process writes its optimizer shard
        ctx.denoiser.save_checkpoint(str(save.state_dir / checkpointing.DEEPSPEED_DIR), tag="state",
                                     exclude_frozen_parameters=True)
    elif accelerator.is_main_process:
        optimizer_state = {"optimizer": ctx.optimizer.state_dict()}
        if accelerator.scaler is not None:
            optimizer_state["scaler"] = accelerator.scaler.state_dict()
        torch.save(optimizer_state, save.state_dir / checkpointing.OPTIMIZER_FILE)
    torch.save(rng_state(), save.state_dir / checkpointing.RNG_DIR / f"rank{accelerator.process_index}.pt")
    if config.weight_hash:  # every process hashes its own copy: they must agree
        (save.state_dir / checkpointing.HASH_DIR).mkdir(exist_ok=True)
        (save.state_dir / checkpointing.HASH_DIR / f"rank{accelerator.process_index}.txt").write_text(
            weight_hash(ctx.trainable) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpointing.write_json(save.state_dir / checkpointing.STATE_FILE, {
            "format": checkpointing.STATE_FORMAT,
            "step": progress.step,
            "micro_step": progress.micro_step,
            "video_batches": progress.video_batches,
            "image_batches": progress.image_batches,
            "still_batches": progress.still_batches,
            "ema_updates": ctx.ema.updates if ctx.ema is not None else 0,
            "world_size": accelerator.num_processes,
            "parameter_set": config.parameter_set,
            "deepspeed": ctx.deepspeed,
            "exports": exports,
            "config": config.to_dict(),
        })
        final = save.commit(config.keep_last)
        ctx.log.info(f"saved checkpoint {final}")
    accelerator.wait_for_everyone()


def read_exported_weights(config: TrainConfig, path: Path) -> dict:
    """Trainable tensors by UNet name from an exported file, exactly as written."""
    import torch

    if config.parameter_set == "exvideo":
        from longvid_core.checkpoint_io import open_tensors

        tensors = open_tensors(path)
        return {name: tensors[name] for name in tensors.keys()}
    from longvid_core import load_svd

    return load_svd(path, dtype=torch.float32).unet.state_dict()


def load_checkpoint(ctx, folder: Path) -> Progress:
    """Restore weights, optimizer, EMA, data position and this process's random state."""
    import torch

    from training.determinism import set_rng_state

    accelerator, config = ctx.accelerator, ctx.config
    state = checkpointing.read_state(folder)
    if state["parameter_set"] != config.parameter_set:
        raise ValueError(f"{folder}: this checkpoint trained '{state['parameter_set']}' weights; this run trains "
                         f"'{config.parameter_set}'")
    if state["deepspeed"] != ctx.deepspeed:
        raise ValueError(f"{folder}: saved {'with' if state['deepspeed'] else 'without'} DeepSpeed; resume it the "
                         "same way (the optimizer state formats differ)")
    names = export_names(config)
    if ctx.deepspeed:
        ctx.denoiser.load_checkpoint(str(folder / checkpointing.STATE / checkpointing.DEEPSPEED_DIR), tag="state",
                                     load_module_strict=False)
    else:
        saved = read_exported_weights(config, folder / names["weights"])
        with torch.no_grad():
            for name, p in ctx.trainable.items():
                if name not in saved:
                    raise ValueError(f"{folder}: {names['weights']} has no {name}")
                p.copy_(saved[name])
        optimizer_state = torch.load(folder / checkpointing.STATE / checkpointing.OPTIMIZER_FILE,
                                     map_location="cpu", weights_only=True)
        ctx.optimizer.load_state_dict(optimizer_state["optimizer"])
        if accelerator.scaler is not None and "scaler" in optimizer_state:
            accelerator.scaler.load_state_dict(optimizer_state["scaler"])
    if ctx.ema is not None:
        ema_file = folder / names["ema"]
        if ema_file.is_file():
            saved = read_exported_weights(config, ema_file)
            ctx.ema.load_state_dict({name: saved[name] for name in ctx.trainable}, state["ema_updates"])
        else:
            ctx.log.info(f"warning: {folder} has no EMA; the EMA restarts from the current weights")
    rng_file = folder / checkpointing.STATE / checkpointing.RNG_DIR / f"rank{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=True))
    else:
        ctx.log.warn_any_process(f"{folder} has no random state for process {accelerator.process_index} "
                                 f"(saved with {state['world_size']} processes); keeping a fresh one",
                                 accelerator.process_index)
    if state["world_size"] != accelerator.num_processes:
        ctx.log.info(f"note: resuming a {state['world_size']}-process run with {accelerator.num_processes} "
                     "processes: the data order continues by samples seen, not identically")
    return Progress(state["step"], state["micro_step"], state["video_batches"], state["image_batches"],
                    state["still_batches"])


def weight_hash(trainable) -> str:
    """SHA-256 of the trainable weights (names and float32 values, in order)."""
    digest = hashlib.sha256()
    for name, p in trainable.items():
        digest.update(name.encode())
        digest.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class Context:
    config: TrainConfig
    accelerator: object
    log: Log
    model: object
    trainable: dict
    denoiser: object
    optimizer: object
    ema: object
    deepspeed: bool


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    accelerator = Accelerator(mixed_precision=MIXED_PRECISION[config.precision],
                              gradient_accumulation_steps=config.grad_accum, cpu=config.cpu)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if deepspeed:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        # our data loader is not prepared by accelerate, so fill the values it would have inferred
        for key, value in (("train_micro_batch_size_per_gpu", config.batch_size),
                           ("gradient_accumulation_steps", config.grad_accum),
                           ("gradient_clipping", config.max_grad_norm)):
            if ds.get(key, "auto") == "auto":
                ds[key] = value
        if ds.get("train_batch_size", "auto") == "auto":
            ds["train_batch_size"] = config.batch_size * config.grad_accum * accelerator.num_processes
    return accelerator, deepspeed


def prepare_data(config: TrainConfig, accelerator, log: Log):
    """Index the videos on the main process (reporting and skipping bad ones), share the index."""
    from accelerate.utils import broadcast_object_list

    from training import data
    from training.latent_cache import LatentCache

    frames = config.clip_frames()
    result = [None]
    if accelerator.is_main_process:
        entries, missing = data.find_videos(config.data_dir, config.metadata or None)
        usable, skipped = data.index_videos(entries, frames, config.frame_stride)
        skipped = missing + skipped
        report = {"usable": len(usable), "skipped": [s.as_dict() for s in skipped]}
        checkpointing.write_json(Path(config.output_dir) / "skipped_videos.json", report)
        log.info(f"data: {len(usable)} usable videos in {config.data_dir}; skipped {len(skipped)}"
                 + (" (listed in skipped_videos.json)" if skipped else ""))
        for s in skipped:
            log.info(f"  skipped {s.path}: {s.reason}")
        result = [usable]
    if accelerator.num_processes > 1:
        broadcast_object_list(result, from_process=0)
    usable = result[0]
    needed = config.batch_size * accelerator.num_processes
    if len(usable) * config.clips_per_video < needed:
        raise ValueError(f"{len(usable)} usable videos x {config.clips_per_video} clips are fewer than one step "
                         f"needs ({config.batch_size} per process x {accelerator.num_processes} processes)")
    cache = None
    if config.cache_dir:
        base = Path(config.base)
        stat = base.stat()
        cache = LatentCache(config.cache_dir, f"{base.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:"
                                 f"vae_fp32={config.vae_fp32}:{config.precision}")
    spec = data.ClipSpec(frames, config.frame_stride, config.height, config.width)
    dataset = data.ClipDataset(usable, spec, config.seed, config.clips_per_video, cache, config.condition_frame)
    coverage = dataset.fixed_clip_coverage()
    if coverage is not None:
        clips, covered, total = coverage
        visits = config.max_steps * needed * config.grad_accum / clips
        log.info(f"data: --cache-dir fixes clip starts: {clips} distinct clips ({len(usable)} videos x "
                 f"{config.clips_per_video}) use {covered} of {total} source frames ({100 * covered / total:.0f}%); "
                 f"{config.max_steps} steps see each clip about {visits:.0f} times"
                 + (" (raise --clips-per-video or add videos to see more of them)" if covered < total / 2 else ""))
    images = data.find_images(config.image_dir) if config.image_dir and config.image_batch_fraction > 0 else None
    return dataset, cache, images


def train(config: TrainConfig) -> int:
    import torch

    from training import data
    from training.determinism import generator, seed_everything
    from training.ema import EMA
    from training.noise_levels import ProgressiveLevels

    resume_from = checkpointing.resolve_resume(config.output_dir, config.resume)
    existing = checkpointing.complete_checkpoints(Path(config.output_dir) / checkpointing.CHECKPOINTS)
    if resume_from is None and existing:
        raise ValueError(f"{config.output_dir} already holds checkpoints (newest: {existing[-1][1].name}); pass "
                         "--resume latest to continue that run, or choose another --output-dir")
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    accelerator, deepspeed = make_accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    log = Log(config, accelerator)
    seed_everything(config.seed, rank)
    log.info(f"LongVid trainer: mode {config.mode}, {world} process(es) on {accelerator.device}"
             f"{' with DeepSpeed' if deepspeed else ''}, precision {config.precision}")

    model, trainable = load_model(config, accelerator.device)
    log.info(f"training {sum(p.numel() for p in trainable.values()):,} of "
             f"{sum(p.numel() for p in model.unet.parameters()):,} UNet parameters ({config.parameter_set})")
    denoiser = make_denoiser_module(model.unet)
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=config.learning_rate,
                                  betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                                  weight_decay=config.weight_decay)
    denoiser, optimizer = accelerator.prepare(denoiser, optimizer)
    ema = EMA(trainable, config.ema_decay) if config.ema_decay > 0 else None
    ctx = Context(config, accelerator, log, model, trainable, denoiser, optimizer, ema, deepspeed)

    dataset, cache, images = prepare_data(config, accelerator, log)
    progressive = None
    if config.progressive:
        progressive = ProgressiveLevels(config.progressive_window, config.progressive_chunk, config.progressive_steps,
                                        config.sigma_min, config.sigma_max, config.progressive_shift,
                                        config.variable_length_fraction, config.clean_start_fraction,
                                        config.progressive_context_sigma)

    progress = Progress()
    if resume_from is not None:
        progress = load_checkpoint(ctx, resume_from)
        log.info(f"resumed from {resume_from} at step {progress.step}")

    eval_batch = held_out_batch(model, config, dataset, accelerator.device) if config.eval_every > 0 else None

    loader = iter(data.clip_loader(dataset, config.batch_size, rank, world, progress.video_batches,
                                   config.num_workers))
    errors_file = Path(config.output_dir) / "data_errors.jsonl"
    videos_per_step = config.batch_size * config.grad_accum * world

    def next_batch(micro_step: int) -> Batch:
        # the same decision on every process: LaVie's fixed fraction of still-image batches
        draw = torch.rand((), generator=generator(config.seed, "still?", micro_step))
        wants_still = config.image_batch_fraction > 0 and bool(draw < config.image_batch_fraction)
        if wants_still and images is not None:
            first = (progress.image_batches * world + rank) * config.batch_size
            stills = [(data.still_image(images, config.seed, n, config.height, config.width),
                       data.DEFAULT_FPS / config.frame_stride, n) for n in range(first, first + config.batch_size)]
            progress.image_batches += 1
            progress.still_batches += 1
            return still_batch(model, config, stills, accelerator.device, micro_step)
        samples = next(loader)
        progress.video_batches += 1
        for sample in samples:
            for failure in sample.failures:
                log.warn_any_process(f"skipped {failure.path}: {failure.reason}", rank)
                with open(errors_file, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"path": failure.path, "reason": failure.reason,
                                         "sample": sample.index}) + "\n")
        if wants_still:  # no image folder: stills are the first frames of the videos
            progress.still_batches += 1
            stills = [(sample.first_frame, sample.fps, sample.index) for sample in samples]
            return still_batch(model, config, stills, accelerator.device, micro_step)
        return video_batch(model, config, samples, cache, accelerator.device, micro_step)

    def log_eval(step: int) -> None:
        value = fixed_eval_loss(denoiser, eval_batch, config)
        log.metrics(step, {"eval_loss": value})

    if eval_batch is not None and progress.step == 0:
        log_eval(0)
    window_loss = torch.zeros((), device=accelerator.device)
    window_steps, window_start = 0, time.perf_counter()
    grad_norm = float("nan")
    while progress.step < config.max_steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, progress.step)
        for _ in range(config.grad_accum):
            with accelerator.accumulate(denoiser):
                batch = next_batch(progress.micro_step)
                step_generator = generator(config.seed, "step", progress.micro_step, rank)
                result = batch_loss(denoiser, batch, config, progressive, step_generator)
                accelerator.backward(result.loss)
                if accelerator.sync_gradients and config.max_grad_norm > 0:
                    norm = accelerator.clip_grad_norm_(list(trainable.values()), config.max_grad_norm)
                    grad_norm = float(norm) if norm is not None else float("nan")
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            progress.micro_step += 1
            window_loss += result.loss.detach() / config.grad_accum
        progress.step += 1
        window_steps += 1
        if ema is not None and not accelerator.optimizer_step_was_skipped:
            ema.update(trainable)

        if progress.step % config.log_every == 0 or progress.step == config.max_steps:
            mean_loss = accelerator.reduce(window_loss, "mean").item() / window_steps
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"loss is {mean_loss} at step {progress.step}: lower --learning-rate, or use "
                                         "--precision bf16 instead of fp16; the last checkpoint is intact")
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            log.metrics(progress.step, {
                "loss": mean_loss, "lr": learning_rate(config, progress.step - 1), "grad_norm": grad_norm,
                "steps_per_s": window_steps / elapsed, "samples_per_s": window_steps * videos_per_step / elapsed,
                "peak_mem_mb": peak_memory_mb(accelerator.device), "still_batches": progress.still_batches,
            })
            window_loss.zero_()
            window_steps, window_start = 0, time.perf_counter()
        if eval_batch is not None and (progress.step % config.eval_every == 0 or progress.step == config.max_steps):
            log_eval(progress.step)
        if progress.step % config.save_every == 0 or progress.step == config.max_steps:
            save_checkpoint(ctx, progress)
            window_start = time.perf_counter()  # saving is not training time

    if not checkpointing.Save(config.output_dir, progress.step).already_done():
        save_checkpoint(ctx, progress)  # resumed from another folder at max_steps: still leave a checkpoint here
    accelerator.wait_for_everyone()
    log.close()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
