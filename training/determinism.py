"""Seeds and random states, so that a run can stop and resume exactly.

Every random choice the trainer makes for a sample or a step (which clip, where it starts, its
sigma, its noise) comes from a CPU ``torch.Generator`` seeded by :func:`derive_seed` from the run
seed and the sample's or step's number. The same step therefore draws the same numbers whether the
run went straight through or was resumed, whatever the number of data-loader workers, and on any
device. The global generators (python, numpy, torch, CUDA) are saved and restored per process as
well (:func:`rng_state` / :func:`set_rng_state`) for anything else that draws from them.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(*values) -> int:
    """A 63-bit seed that depends on every value given (``derive_seed(seed, "noise", step, rank)``)."""
    digest = hashlib.sha256(repr(values).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(*values) -> torch.Generator:
    """A CPU generator seeded with :func:`derive_seed` of ``values``."""
    return torch.Generator(device="cpu").manual_seed(derive_seed(*values))


def rng_state() -> dict:
    """This process's global random states, in a form ``torch.load(weights_only=True)`` reads."""
    version, internal, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, rank: int) -> None:
    """Seed the global generators of process ``rank`` (distinct per process) with accelerate's
    ``set_seed`` (python, numpy, torch and every accelerator's generators)."""
    from accelerate.utils import set_seed

    set_seed(derive_seed(seed, "process", rank) % (2**32))  # numpy takes 32-bit seeds


__all__ = ["derive_seed", "generator", "rng_state", "set_rng_state", "seed_everything"]
