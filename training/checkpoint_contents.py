"""What a checkpoint holds and how a run saves and restores it: the exported weights users load,
the optimizer, EMA, data position (:class:`Progress`) and random states, written into the folder
layout of :mod:`training.checkpointing` so that a resumed run continues exactly. Every process
calls these; ``ctx`` is the run's ``train.Context``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from training.checkpointing import (DEEPSPEED_DIR, HASH_DIR, OPTIMIZER_FILE, RNG_DIR, STATE, STATE_FILE,
                                    STATE_FORMAT, Save, read_state, write_json)
from training.user_errors import UserError

if TYPE_CHECKING:
    from training.config import TrainConfig


@dataclass
class Progress:
    step: int = 0  # optimizer steps done
    micro_step: int = 0  # micro-batches done (per process; the same on every process)
    video_batches: int = 0  # video micro-batches consumed: the data position
    image_batches: int = 0  # micro-batches of --image-dir pictures consumed: that folder's position
    still_batches: int = 0  # still-image micro-batches trained on (from either source)


LORA_EXPORTS = {"lora": "lora.safetensors", "lora_ema": "lora_ema.safetensors"}


def export_names(config: TrainConfig) -> dict[str, str]:
    """File names by role: ``weights``/``ema`` (what the run trains) and, for exvideo with LoRA,
    ``lora``/``lora_ema`` beside the extension's."""
    if config.parameter_set == "lora":
        return {"weights": LORA_EXPORTS["lora"], "ema": LORA_EXPORTS["lora_ema"]}
    if config.parameter_set == "exvideo":
        names = {"weights": "extension.safetensors", "ema": "extension_ema.safetensors",
                 "diffsynth": "extension_diffsynth.safetensors"}
        return {**names, **LORA_EXPORTS} if config.lora else names
    return {"weights": "model.safetensors", "ema": "model_ema.safetensors"}


def write_exports(model, trainable, ema, config: TrainConfig, folder: Path) -> list[str]:
    """The files users load: the trained weights (and their EMA) in LongVid's formats."""
    from longvid_core import save_svd
    from longvid_core.weights.exvideo_file import save_extension
    from longvid_core.weights.lora import META_EXTENSION, parse_targets, save_lora, without_lora_layers

    names = export_names(config)
    written = []
    trained_for = config.trained_for().to_metadata()  # read by `auto` sampling (pipeline.resolve_auto)
    lora_targets = parse_targets(config.lora_targets)
    # provenance: the extension the LoRA was trained beside (frozen, or this checkpoint's own)
    beside = Path(config.extension).name if config.extension else ""
    if config.parameter_set == "exvideo":
        beside = names["weights"]
    lora_metadata = {**trained_for, **({META_EXTENSION: beside} if beside else {})}

    def save(role):  # "weights" or "ema"
        lora_file = names.get("lora" if role == "weights" else "lora_ema")
        if config.parameter_set == "lora":
            save_lora(model, folder / names[role], lora_targets, metadata=lora_metadata)
            return [names[role]]
        if lora_file:
            save_lora(model, folder / lora_file, lora_targets, metadata=lora_metadata)
        with without_lora_layers(model.unet):  # the extension's file and base identity as without LoRA
            if config.parameter_set == "exvideo":
                save_extension(model, folder / names[role], layout="longvid", metadata=trained_for)
            else:
                save_svd(model, folder / names[role], metadata=trained_for)
        return [names[role]] + ([lora_file] if lora_file else [])

    written += save("weights")
    if config.parameter_set == "exvideo" and config.save_diffsynth:
        with without_lora_layers(model.unet):
            save_extension(model, folder / names["diffsynth"], layout="diffsynth", metadata=trained_for)
        written.append(names["diffsynth"])
    if ema is not None:
        with ema.applied(trainable):
            written += save("ema")
    return written


def save_checkpoint(ctx, progress: Progress) -> None:
    import torch

    from training.determinism import rng_state

    accelerator, config = ctx.accelerator, ctx.config
    save = Save(config.output_dir, progress.step)
    if save.already_done():
        return
    if accelerator.is_main_process:
        save.begin()
    accelerator.wait_for_everyone()
    exports = []
    if accelerator.is_main_process:
        exports = write_exports(ctx.model, ctx.trainable, ctx.ema, config, save.staging)
    if ctx.deepspeed:  # every process writes its optimizer shard
        ctx.denoiser.save_checkpoint(str(save.state_dir / DEEPSPEED_DIR), tag="state", exclude_frozen_parameters=True)
    elif accelerator.is_main_process:
        optimizer_state = {"optimizer": ctx.optimizer.state_dict()}
        if accelerator.scaler is not None:
            optimizer_state["scaler"] = accelerator.scaler.state_dict()
        torch.save(optimizer_state, save.state_dir / OPTIMIZER_FILE)
    torch.save(rng_state(), save.state_dir / RNG_DIR / f"rank{accelerator.process_index}.pt")
    if config.weight_hash:  # every process hashes its own copy: they must agree
        (save.state_dir / HASH_DIR).mkdir(exist_ok=True)
        (save.state_dir / HASH_DIR / f"rank{accelerator.process_index}.txt").write_text(
            weight_hash(ctx.trainable) + "\n")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(save.state_dir / STATE_FILE, {
            "format": STATE_FORMAT,
            "step": progress.step,
            "micro_step": progress.micro_step,
            "video_batches": progress.video_batches,
            "image_batches": progress.image_batches,
            "still_batches": progress.still_batches,
            "ema_updates": ctx.ema.updates if ctx.ema is not None else 0,
            "world_size": accelerator.num_processes,
            "parameter_set": config.parameter_set,
            "lora": config.lora,
            "deepspeed": ctx.deepspeed,
            "exports": exports,
            "base_identity": getattr(ctx.model, "base_identity", None),  # a resume must use the same base
            "lr_scheduler": ctx.lr_scheduler.state_dict() if ctx.lr_scheduler is not None else None,
            "config": config.to_dict(),
        })
        final = save.commit(config.keep_last)
        ctx.log.info(f"saved checkpoint {final}")
    accelerator.wait_for_everyone()


def read_exported_weights(config: TrainConfig, path: Path) -> dict:
    """Trainable tensors by UNet name from an exported file, exactly as written."""
    import torch

    if config.parameter_set in ("exvideo", "lora") or path.name in LORA_EXPORTS.values():
        from longvid_core.weights.checkpoint_io import open_tensors

        tensors = open_tensors(path)
        return {name: tensors[name] for name in tensors.keys()}
    from longvid_core import load_svd

    return load_svd(path, dtype=torch.float32).unet.state_dict()


def read_checkpoint_file(path: Path, read):
    """``read(path)``; a missing or damaged file is the user's error (a checkpoint copied in part,
    or edited), named with what was expected."""
    try:
        return read(path)
    except Exception as exc:
        raise UserError(f"{path}: expected a complete file of this checkpoint; found "
                        f"{'nothing' if not path.exists() else 'a damaged one'} ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc


def read_trained_weights(config: TrainConfig, folder: Path, role: str) -> dict:
    """Every trainable tensor by name from a checkpoint's exports: ``role`` "weights" or "ema"
    (exvideo with LoRA: the extension's file and the LoRA's together)."""
    names = export_names(config)
    saved = read_checkpoint_file(folder / names[role], lambda path: read_exported_weights(config, path))
    lora_file = names.get("lora" if role == "weights" else "lora_ema")
    if lora_file and config.parameter_set != "lora":
        saved.update(read_checkpoint_file(folder / lora_file, lambda path: read_exported_weights(config, path)))
    return saved


def load_checkpoint(ctx, folder: Path) -> Progress:
    """Restore weights, optimizer, EMA, data position and this process's random state."""
    import torch

    from training.determinism import set_rng_state

    accelerator, config = ctx.accelerator, ctx.config
    state = read_state(folder)
    if state["parameter_set"] != config.parameter_set:
        raise ValueError(f"{folder}: this checkpoint trained '{state['parameter_set']}' weights; this run trains "
                         f"'{config.parameter_set}'")
    if state.get("lora", False) != config.lora:
        raise ValueError(f"{folder}: this checkpoint trained {'with' if state.get('lora') else 'without'} LoRA "
                         f"layers; this run trains {'with' if config.lora else 'without'} (--mode {config.mode})")
    if state["deepspeed"] != ctx.deepspeed:
        raise ValueError(f"{folder}: saved {'with' if state['deepspeed'] else 'without'} DeepSpeed; resume it the "
                         "same way (the optimizer state formats differ)")
    names = export_names(config)
    if ctx.deepspeed:
        ctx.denoiser.load_checkpoint(str(folder / STATE / DEEPSPEED_DIR), tag="state", load_module_strict=False)
    else:
        saved = read_trained_weights(config, folder, "weights")
        with torch.no_grad():
            for name, p in ctx.trainable.items():
                if name not in saved:
                    raise ValueError(f"{folder}: {names['weights']} has no {name}")
                p.copy_(saved[name])
        optimizer_state = read_checkpoint_file(folder / STATE / OPTIMIZER_FILE, lambda path: torch.load(
            path, map_location="cpu", weights_only=True))
        ctx.optimizer.load_state_dict(optimizer_state["optimizer"])
        if accelerator.scaler is not None and "scaler" in optimizer_state:
            accelerator.scaler.load_state_dict(optimizer_state["scaler"])
    if ctx.lr_scheduler is not None:  # after the optimizer: it sets the optimizer's learning rates
        from training.lr_schedule import restore_lr_scheduler

        restore_lr_scheduler(ctx.lr_scheduler, ctx.optimizer, state.get("lr_scheduler"), state["step"])
    if ctx.ema is not None:
        ema_file = folder / names["ema"]
        if ema_file.is_file():
            saved = read_trained_weights(config, folder, "ema")
            ctx.ema.load_state_dict({name: saved[name] for name in ctx.trainable}, state["ema_updates"])
        else:
            ctx.log.info(f"warning: {folder} has no EMA; the EMA restarts from the current weights")
    rng_file = folder / STATE / RNG_DIR / f"rank{accelerator.process_index}.pt"
    if rng_file.is_file():
        set_rng_state(read_checkpoint_file(rng_file, lambda path: torch.load(path, weights_only=True)))
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


__all__ = ["LORA_EXPORTS", "Progress", "export_names", "load_checkpoint", "read_exported_weights",
           "read_trained_weights", "save_checkpoint", "weight_hash", "write_exports"]
