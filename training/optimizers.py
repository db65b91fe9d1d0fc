"""The trainer's optimizer: AdamW with float32 states (torch), or AdamW with 8-bit states
(bitsandbytes' ``AdamW8bit``, block-wise quantised moments; it runs on CPU and CUDA tensors).

Adam keeps two moments per trained weight: 8 bytes per parameter in float32, 2 bytes in 8 bits
(plus one float32 scale per block of 256 values). bitsandbytes keeps float32 moments for tensors
under ``MIN_8BIT_SIZE`` elements (biases, norms), where quantising saves nothing worth its error.
"""

from __future__ import annotations

import importlib.util

OPTIMIZERS = ("adamw", "adamw8bit")
# the bitsandbytes pin of pyproject.toml's training extra
BITSANDBYTES = "bitsandbytes>=0.50,<0.51"
# bitsandbytes' own default: smaller tensors keep float32 moments
MIN_8BIT_SIZE = 4096


def require_bitsandbytes(name: str) -> None:
    """Raise ValueError naming the install command when the 8-bit optimizer's library is missing."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"--optimizer {name} needs bitsandbytes: pip install \"{BITSANDBYTES}\" "
                         "(or pip install -e \".[training]\")")


def make_optimizer(config, parameters):
    """The optimizer ``--optimizer`` names, over ``parameters``, with the run's AdamW settings.
    ``config``: the run's :class:`training.config.TrainConfig` (not imported here: the config
    module imports this one for the optimizer names)."""
    settings = dict(lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps,
                    weight_decay=config.weight_decay)
    parameters = list(parameters)
    if config.optimizer == "adamw":
        import torch

        return torch.optim.AdamW(parameters, **settings)
    if config.optimizer == "adamw8bit":
        require_bitsandbytes(config.optimizer)
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameters, min_8bit_size=MIN_8BIT_SIZE, **settings)
    raise ValueError(f"--optimizer: expected one of {', '.join(OPTIMIZERS)}; found {config.optimizer!r}")


def state_bytes(optimizer) -> dict:
    """Bytes of optimizer state per dtype name (e.g. {'uint8': ..., 'float32': ...}), for reports and tests."""
    import torch

    totals: dict = {}
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                key = str(value.dtype).removeprefix("torch.")
                totals[key] = totals.get(key, 0) + value.numel() * value.element_size()
    return totals


__all__ = ["OPTIMIZERS", "BITSANDBYTES", "MIN_8BIT_SIZE", "require_bitsandbytes", "make_optimizer", "state_bytes"]
