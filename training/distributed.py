"""How the trainer asks accelerate for its processes: one device, DDP, or DeepSpeed ZeRO-2 on GPUs
or, where no GPU is visible, on CPU processes over gloo.

A DeepSpeed run is asked for by launching with a DeepSpeed accelerate config
(``accelerate launch --config_file training/accelerate_deepspeed_zero2.yaml ...``), which sets
``ACCELERATE_USE_DEEPSPEED=true`` in every process. accelerate ignores that request when
``Accelerator(cpu=True)``, and on a machine without CUDA it leaves each DeepSpeed process believing
it is alone (no backend chosen, so ``num_processes == 1``). :func:`accelerator_options` therefore
honours the request: no GPU visible -> ``cpu=False`` plus the gloo backend, so DeepSpeed's own
initialisation joins the processes into one group; a GPU visible with ``--cpu`` -> refused, since
DeepSpeed would put the model on the GPU.

:func:`fill_deepspeed_config` fills the ``"auto"`` values accelerate would infer from a prepared data
loader (the trainer prepares none): DeepSpeed checks ``train_batch_size == micro batch x gradient
accumulation x processes`` and stops otherwise.
"""

from __future__ import annotations

import os

DEEPSPEED_ENV = "ACCELERATE_USE_DEEPSPEED"
# what a CPU-only DeepSpeed run joins its processes with (DeepSpeed's CPU accelerator supports it)
CPU_BACKEND = "gloo"


def deepspeed_requested(environ=None) -> bool:
    """True when launched with a DeepSpeed accelerate config (accelerate launch sets this variable)."""
    environ = os.environ if environ is None else environ
    return environ.get(DEEPSPEED_ENV, "false").strip().lower() in ("1", "true", "yes")


def accelerator_options(cpu: bool, deepspeed: bool, cuda_available: bool) -> dict:
    """``Accelerator`` keyword arguments (besides precision and accumulation) for these settings.

    ``backend`` names the process-group backend to request, or is None for accelerate's choice.
    """
    if not deepspeed:
        return {"cpu": cpu, "backend": None}
    if cpu and cuda_available:
        raise ValueError("--cpu with a DeepSpeed accelerate config: DeepSpeed would use the visible GPU; drop "
                         "--cpu to train on the GPUs, or hide them (CUDA_VISIBLE_DEVICES=) to run DeepSpeed "
                         "on CPU processes")
    if not cuda_available:
        return {"cpu": False, "backend": CPU_BACKEND}
    return {"cpu": False, "backend": None}


def _value(ds_config: dict, key: str):
    value = ds_config.get(key, "auto")
    return None if value == "auto" else value


def fill_deepspeed_config(ds_config: dict, batch_size: int, grad_accum: int, max_grad_norm: float,
                          num_processes: int) -> dict:
    """``ds_config`` with its batch, accumulation and clipping ``"auto"`` values filled from the
    trainer's settings; a value the file fixes must agree with the trainer's, which feeds the batches.

    Raises ValueError naming the setting that disagrees.
    """
    out = dict(ds_config)
    for key, flag, value in (("train_micro_batch_size_per_gpu", "--batch-size", batch_size),
                             ("gradient_accumulation_steps", "--grad-accum", grad_accum)):
        fixed = _value(out, key)
        if fixed is not None and int(fixed) != value:
            raise ValueError(f"the DeepSpeed config sets {key} = {fixed} but the trainer feeds {flag} {value}; "
                             f"set it to \"auto\" or pass {flag} {fixed}")
        out[key] = value
    if _value(out, "gradient_clipping") is None:
        out["gradient_clipping"] = max_grad_norm
    total = batch_size * grad_accum * num_processes
    fixed = _value(out, "train_batch_size")
    if fixed is not None and int(fixed) != total:
        raise ValueError(f"the DeepSpeed config sets train_batch_size = {fixed} but {batch_size} per process x "
                         f"{grad_accum} accumulation x {num_processes} processes = {total}; set it to \"auto\"")
    out["train_batch_size"] = total
    return out


def check_process_group(num_processes: int, environ=None) -> None:
    """Refuse a launch whose processes did not join one group (each would train alone, unsharded)."""
    environ = os.environ if environ is None else environ
    launched = environ.get("WORLD_SIZE", "")
    if launched.isdigit() and int(launched) > 1 and num_processes != int(launched):
        raise ValueError(f"launched {launched} processes (WORLD_SIZE) but accelerate sees {num_processes}: the "
                           "processes did not form one group")
