"""Batches: clips and pictures -> VAE latents and SVD's conditioning (``Batch``), and the EDM
denoising loss of a batch, for training and for the fixed held-out evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import TYPE_CHECKING, Callable

from training.model_setup import as_denoiser

if TYPE_CHECKING:
    import torch

    from longvid_core.networks.conditioning import SVDCond
    from training.config import TrainConfig

# Sigmas of the fixed held-out evaluation batch: around the training distribution's bulk.
EVAL_SIGMAS = (0.05, 0.3, 1.0, 3.0, 10.0)


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
    from training.pixels import motion_bucket_from_score

    fps_id = config.fps if config.fps >= 0 else max(1, round(fps))
    bucket = config.motion_bucket_id if config.motion_bucket_id >= 0 else motion_bucket_from_score(score)
    return fps_id, bucket


def encode_clip(model, config: TrainConfig, pixels):
    """``uint8 [F, H, W, 3]`` -> VAE-scaled latents ``[F, 4, h, w]`` float32, encoded as the nodes
    encode a video (``longvid_core.run.frames.encode_frames``: posterior mode times 0.18215)."""
    from longvid_core.run.frames import encode_frames

    return encode_frames(model.vae, pixels.float() / 255.0, batch_chunk=config.vae_batch)[0]


def encode_condition(model, config: TrainConfig, first_frame, fps_id: int, bucket: int, seed: int):
    """SVD's conditioning for a first frame ``uint8 [H, W, 3]``: ``encode_image``, as the nodes call it."""
    image = first_frame[None].float() / 255.0
    return model.encode_image(image, fps=fps_id, motion_bucket_id=bucket,
                              noise_aug_strength=config.noise_aug_strength, seed=seed)


def video_batch(model, config: TrainConfig, samples, cache, device, micro_step: int) -> Batch:
    import torch

    from longvid_core.networks.conditioning import SVDCond, added_time_ids
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

    from longvid_core.networks.conditioning import SVDCond
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


def batch_loss(denoiser, batch: Batch, config: TrainConfig, progressive, generator):
    """EDM denoising loss of ``batch``: sigma per video, or progressive levels per frame, or (a
    ``--progressive-rollout-fraction`` of video batches) after a rollout of the sampler itself."""
    import torch

    from longvid_core.networks.losses import edm_denoising_loss
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
    if config.guide_frame_fraction > 0 and batch.kind == "video":  # drawn only when on: old runs replay
        clean_sigma = progressive.clean_sigma if progressive is not None else config.sigma_min
        sigma, conditioning_frames = with_guide_frames(sigma, conditioning_frames, config.guide_frame_fraction,
                                                       clean_sigma, generator)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32)
    device = latents.device
    if config.conditioning_dropout > 0:
        cond = drop_conditioning(cond, config.conditioning_dropout, generator)
    return edm_denoising_loss(
        as_denoiser(denoiser), latents, sigma.to(device), noise.to(device), cond,
        conditioning_frames=None if conditioning_frames is None else conditioning_frames.to(device),
        noise_conditioning=noise_conditioning, weighting=config.loss_weighting,
    )


def with_guide_frames(sigma, conditioning_frames, fraction: float, clean_sigma: float, generator):
    """``(sigma, mask)`` with, in a ``fraction`` of the clips, one or two of the noisy frames made
    clean guide frames: given at ``clean_sigma`` and masked (given exactly, left out of the loss), as
    the sampler shows a ``clean`` guide. Diffusion Forcing (Chen et al., NeurIPS 2024) trains with
    independent per-frame levels so that any frame may be known; this is the part LongVid's guides
    need. ``sigma [B, F]``; ``conditioning_frames [B, F]`` bool or None (no clean chunk)."""
    import torch

    count, frames = sigma.shape
    mask = (torch.zeros(count, frames, dtype=torch.bool) if conditioning_frames is None
            else conditioning_frames.clone().cpu())
    sigma = sigma.clone()
    for b in range(count):
        chosen = bool(torch.rand((), generator=generator, dtype=torch.float64) < fraction)
        noisy = (~mask[b]).nonzero().flatten()
        if not chosen or len(noisy) < 2:  # keep at least one frame in the loss
            continue
        many = 1 + int(torch.randint(0, 2, (), generator=generator))
        picked = noisy[torch.randperm(len(noisy), generator=generator)[:min(many, len(noisy) - 1)]]
        mask[b, picked] = True
        sigma[b, picked] = clean_sigma
    return sigma, mask


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


def held_out_batch(model, config: TrainConfig, dataset, device) -> Batch:
    """The first clip (from frame 0) of the first videos that decode: a fixed batch for ``fixed_eval_loss``."""
    from training import data, pixels as frames_io

    samples = []
    for number, video in enumerate(dataset.videos):
        try:
            pixels = frames_io.read_clip(video.path, 0, dataset.spec.frames, config.frame_stride, config.height,
                                    config.width)
        except data.VideoError:
            continue
        samples.append(data.ClipSample(-1 - number, str(video.path), 0, video.fps / config.frame_stride,
                                       frames_io.motion_score(pixels), pixels=pixels))
        if len(samples) == config.batch_size:
            return video_batch(model, config, samples, None, device, -1)
    raise ValueError(f"--eval-every: fewer than {config.batch_size} videos decode from frame 0")


def fixed_eval_loss(denoiser, eval_batch: Batch, config: TrainConfig) -> float:
    """Loss on the held-out batch at fixed sigmas with fixed noise: comparable across steps."""
    import torch

    from longvid_core.networks.losses import edm_denoising_loss
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


__all__ = [
    "EVAL_SIGMAS", "Batch", "conditioning_values", "encode_clip", "encode_condition", "video_batch", "still_batch",
    "batch_loss", "rollout_batch_loss", "drop_conditioning", "held_out_batch", "fixed_eval_loss",
]
