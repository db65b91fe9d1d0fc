"""LongVid's trainer: ExVideo post-tuning, PA-VDM progressive-noise fine-tuning, full fine-tuning.

    python training/train.py --base svd_xt.safetensors --data-dir videos/ --output-dir runs/exvideo
    accelerate launch --config_file training/accelerate_deepspeed_zero2.yaml training/train.py \\
        --config training/example_config.toml

One optimizer step, per process and micro-batch:

1. a batch of clips (``training/data.py``) -> VAE latents (scaled) and SVD's conditioning from the
   clip's first frame (``training/batches.py``), computed by ``longvid_core.networks.conditioning.encode_image``
   — the nodes' code — or read from the latent cache (``training/latent_cache.py``); a set fraction
   of batches are still images instead (LaVie Sec. 3.1 joint image-video training; see ``still_batch``);
2. noise levels (``training/noise_levels.py``): one sigma per video, or PA-VDM progressive levels
   per frame from the sampler's own table;
3. the EDM denoising loss (``longvid_core.networks.losses``, via ``training/batches.py``) of the UNet behind
   SVD's preconditioning (``training/model_setup.py``);
4. backward through the trainable weights only (ExVideo's 16 temporal blocks, or every UNet
   weight), gradient clipping, AdamW, then the EMA.

Everything runs under accelerate: one GPU, DDP over GPUs and nodes, DeepSpeed ZeRO-2, or CPU
processes over gloo. Checkpoints (``training/checkpointing.py``) are written atomically and hold
everything a resumed run needs to continue exactly; the log is ``training/train_log.py``. This file
holds the run itself: setup and the loop. Settings: ``training/config.py`` (``--help``). Recipes:
``docs/training.md``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# light modules only (torch is imported inside functions), so that --help answers at once
from training import checkpointing  # noqa: E402
from training.batches import Batch, batch_loss, fixed_eval_loss, held_out_batch, still_batch, video_batch  # noqa: E402
from training.checkpoint_contents import Progress, load_checkpoint, save_checkpoint  # noqa: E402
from training.config import TrainConfig, parse_config  # noqa: E402
from training.lr_schedule import make_lr_scheduler, step_learning_rate  # noqa: E402
from training.progress_bar import make_progress_bar, progress_bar_wanted, show_loss  # noqa: E402
from training.resume_check import check_resume_base, check_resume_settings, describe  # noqa: E402
from training.model_setup import load_model, make_denoiser_module  # noqa: E402
from training.train_log import Log, peak_memory_mb, tracking_options  # noqa: E402
from training.user_errors import EXIT_USER_ERROR, UserError, is_user_error, one_line  # noqa: E402

# --precision -> accelerate's mixed_precision names
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def main(argv=None) -> int:
    try:
        config = parse_config(argv)  # --help and bad settings are answered here, before torch is imported
        if config.estimate_memory:  # a prediction from the stored measurement, nothing trained
            from training.memory import estimate_report

            print(estimate_report(config))
            return 0
        made_output = bool(config.output_dir) and not Path(config.output_dir).exists()
        try:
            return train(config)
        except Exception as exc:
            if made_output and is_user_error(exc):
                remove_unfinished_output(Path(config.output_dir))
            raise
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: keep the traceback
        print(one_line(exc), file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


def remove_unfinished_output(folder: Path) -> None:
    """A refused run leaves nothing behind: the output folder it made goes, unless a checkpoint is in it."""
    import shutil

    if folder.is_dir() and not checkpointing.complete_checkpoints(folder / checkpointing.CHECKPOINTS):
        shutil.rmtree(folder, ignore_errors=True)


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
    lr_scheduler: object = None  # training/lr_schedule.py; its state is saved in state.json


def make_accelerator(config: TrainConfig):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    from training.distributed import (accelerator_options, check_process_group, deepspeed_requested,
                                      fill_deepspeed_config)

    options = accelerator_options(config.cpu, deepspeed_requested(), torch.cuda.is_available())
    handlers = [InitProcessGroupKwargs(backend=options["backend"])] if options["backend"] else []
    accelerator = Accelerator(mixed_precision=MIXED_PRECISION[config.precision],
                              gradient_accumulation_steps=config.grad_accum, cpu=options["cpu"],
                              kwargs_handlers=handlers, **tracking_options(config))
    check_process_group(accelerator.num_processes)
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    if deepspeed:
        # our data loader is not prepared by accelerate, so fill the values it would have inferred
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        ds.update(fill_deepspeed_config(ds, config.batch_size, config.grad_accum, config.max_grad_norm,
                                        accelerator.num_processes))
    return accelerator, deepspeed


def prepare_data(config: TrainConfig, accelerator, log: Log):
    """Index the videos on the main process (reporting and skipping bad ones), share the index."""
    from accelerate.utils import broadcast_object_list

    from training import data, pixels
    from training.latent_cache import LatentCache

    frames = config.clip_frames()
    result = [None]
    if accelerator.is_main_process:
        entries, missing = data.find_videos(config.data_dir, config.metadata or None)
        usable, skipped = data.index_videos(entries, frames, config.frame_stride)
        skipped = missing + skipped
        if not usable:  # refused before anything is written: a failed run leaves no file behind
            found = "no video files" if not skipped else (
                f"only videos it had to skip: {'; '.join(f'{s.path}: {s.reason}' for s in skipped[:3])}"
                + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""))
            raise UserError(f"--data-dir {config.data_dir}: expected .mp4/.webm/.mov videos of at least "
                            f"{data.source_frames_needed(frames, config.frame_stride)} frames; found {found}")
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
    if not usable:  # another process: the main one raised the message
        raise UserError(f"--data-dir {config.data_dir}: no usable videos (see the main process's message)")
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
    images = pixels.find_images(config.image_dir) if config.image_dir and config.image_batch_fraction > 0 else None
    return dataset, cache, images


def nonfinite_loss_message(loss: float, step: int, trainable: dict) -> str:
    """Why the loss went NaN/Inf. The base was checked finite when it was loaded
    (``model_setup.check_finite_weights``) and frozen weights do not change, so it is the training:
    the trained weights that went NaN/Inf are named."""
    from longvid_core.networks.nonfinite import nonfinite_tensors

    damaged = nonfinite_tensors((f"trained.{name}", tensor) for name, tensor in trainable.items())
    held = f": the trained weights hold NaN/Inf ({', '.join(damaged)})" if damaged else ""
    return (f"loss is {loss} at step {step}{held}: lower --learning-rate, or use --precision bf16 instead of fp16; "
            "the last checkpoint is intact")


def train(config: TrainConfig) -> int:
    import torch

    from training import data
    from training.determinism import generator, seed_everything
    from training.ema import EMA
    from training.noise_levels import ProgressiveLevels
    from training.optimizers import make_optimizer

    resume_from = checkpointing.resolve_resume(config.output_dir, config.resume)
    resume_state = checkpointing.read_state(resume_from) if resume_from is not None else None
    if resume_state is not None:  # before anything is loaded: refuse changed settings with one message
        changes = check_resume_settings(resume_state, config, resume_from)
    existing = checkpointing.complete_checkpoints(Path(config.output_dir) / checkpointing.CHECKPOINTS)
    if resume_from is None and existing:
        raise ValueError(f"{config.output_dir} already holds checkpoints (newest: {existing[-1][1].name}); pass "
                         "--resume latest to continue that run, or choose another --output-dir")
    if config.precision == "fp16" and (config.cpu or not torch.cuda.is_available()):
        raise UserError("--precision fp16: expected a CUDA GPU (fp16 autocast runs there only); found the CPU; "
                        "use --precision bf16 or fp32")
    Path(config.output_dir).mkdir(parents=True, exist_ok=True)
    accelerator, deepspeed = make_accelerator(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    log = Log(config, accelerator)
    seed_everything(config.seed, rank)
    log.info(f"LongVid trainer: mode {config.mode}, {world} process(es) on {accelerator.device}"
             f"{' with DeepSpeed' if deepspeed else ''}, precision {config.precision}")
    if resume_state is not None and changes:
        log.info(f"note: resuming with changed settings (--allow-changed-settings): {describe(changes)}")
    dataset, cache, images = prepare_data(config, accelerator, log)  # before the model: data errors come early

    model, trainable = load_model(config, accelerator.device)
    if resume_state is not None and not check_resume_base(resume_state, model, config.base, resume_from):
        log.info(f"note: {resume_from} records no base identity (an older checkpoint): the base is not checked")
    log.info(f"training {sum(p.numel() for p in trainable.values()):,} of "
             f"{sum(p.numel() for p in model.unet.parameters()):,} UNet parameters ({config.parameter_set})")
    denoiser = make_denoiser_module(model.unet)
    optimizer = make_optimizer(config, trainable.values())
    denoiser, optimizer = accelerator.prepare(denoiser, optimizer)
    ema = EMA(trainable, config.ema_decay) if config.ema_decay > 0 else None
    lr_scheduler = make_lr_scheduler(config, optimizer)
    ctx = Context(config, accelerator, log, model, trainable, denoiser, optimizer, ema, deepspeed,
                  lr_scheduler=lr_scheduler)

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
    log.start(progress.step)

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
    bar = make_progress_bar(progress.step, config.max_steps,
                            progress_bar_wanted(config.progress_bar, accelerator.is_local_main_process, sys.stderr))
    while progress.step < config.max_steps:
        step_lr = step_learning_rate(optimizer)
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
        lr_scheduler.step()
        show_loss(bar, window_loss / window_steps)  # the running mean since the last log line
        if ema is not None and not accelerator.optimizer_step_was_skipped:
            ema.update(trainable)

        if progress.step % config.log_every == 0 or progress.step == config.max_steps:
            mean_loss = accelerator.reduce(window_loss, "mean").item() / window_steps
            if not math.isfinite(mean_loss):
                raise FloatingPointError(nonfinite_loss_message(mean_loss, progress.step, trainable))
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            log.metrics(progress.step, {
                "loss": mean_loss, "lr": step_lr, "grad_norm": grad_norm,
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

    bar.close()
    if not checkpointing.Save(config.output_dir, progress.step).already_done():
        save_checkpoint(ctx, progress)  # resumed from another folder at max_steps: still leave a checkpoint here
    accelerator.wait_for_everyone()
    log.close()
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
