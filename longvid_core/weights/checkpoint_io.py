"""Reading and writing tensor files safely.

- Reading: safetensors only, tensor by tensor, each cast to the target dtype as it is read, so a
  full-size fp32 file loaded in fp16 never exists as an fp32 copy in memory. Pickle files
  (``.ckpt``/``.pt``/``.bin``) are refused unless the caller explicitly allows them.
- Writing: to a temporary file beside the target, flushed and fsynced, then ``os.replace``d over
  it, so an interrupted save never damages the previous file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


class CheckpointError(ValueError):
    """A checkpoint file or folder is not what was expected; the message says what was found."""


class LazyTensors(Mapping):
    """Read-only mapping over a safetensors file: ``keys()`` and ``shapes`` without reading data,
    ``[key]`` reads one tensor and casts it to ``dtype``/``device``."""

    def __init__(self, path, dtype: torch.dtype | None = None, device=None, prefix: str = ""):
        self.path = Path(path)
        self.dtype = dtype
        self.device = device
        self.prefix = prefix
        try:
            self._file = safe_open(str(self.path), framework="pt", device="cpu")
            all_keys = list(self._file.keys())
            self.metadata = self._file.metadata() or {}
        except SafetensorError as exc:
            raise CheckpointError(
                f"{self.path}: expected a complete safetensors file; it could not be read "
                f"(truncated or not safetensors?): {exc}"
            ) from exc
        self._set_keys([k[len(prefix):] for k in all_keys if k.startswith(prefix)])

    def _set_keys(self, keys):
        self._keys = keys
        self._keyset = set(keys)

    def with_prefix(self, prefix: str) -> "LazyTensors":
        view = LazyTensors.__new__(LazyTensors)
        view.__dict__.update(self.__dict__)
        view.prefix = prefix
        view._set_keys([k[len(prefix):] for k in self._file.keys() if k.startswith(prefix)])
        return view

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            tensor = self._file.get_tensor(self.prefix + key)
        except SafetensorError as exc:
            raise CheckpointError(f"{self.path}: tensor {self.prefix + key} could not be read: {exc}") from exc
        if self.dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(self.dtype)
        if self.device is not None:
            tensor = tensor.to(self.device)
        return tensor

    def __iter__(self):
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return key in self._keyset

    @property
    def shapes(self) -> dict[str, tuple]:
        out = {}
        for k in self._keys:
            out[k] = tuple(self._file.get_slice(self.prefix + k).get_shape())
        return out


class LoadedTensors(dict):
    """A plain dict of tensors with the same ``shapes``/``metadata`` interface as LazyTensors
    (used for pickle files a caller explicitly allowed)."""

    metadata: dict = {}

    @property
    def shapes(self) -> dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in self.items()}

    def with_prefix(self, prefix: str) -> "LoadedTensors":
        return LoadedTensors({k[len(prefix):]: v for k, v in self.items() if k.startswith(prefix)})


def open_tensors(path, dtype=None, device=None, allow_pickle: bool = False):
    """Open a tensor file for lazy, per-tensor reading. See the module doc for the pickle rule."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise CheckpointError(
                f"{path}: is a pickle checkpoint ({path.suffix}); LongVid loads safetensors by default "
                "because pickle files can run code. Convert it to .safetensors, or pass allow_pickle=True "
                "if you trust the file."
            )
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        state = state.get("state_dict", state)
        tensors = LoadedTensors()
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                if dtype is not None and v.is_floating_point():
                    v = v.to(dtype)
                tensors[k] = v.to(device) if device is not None else v
        return tensors
    return LazyTensors(path, dtype=dtype, device=device)


def atomic_write(path, write) -> Path:
    """Write ``path`` atomically: ``write(temporary_path)`` beside it, fsync, then rename over it.

    An interrupted write leaves the previous file untouched and no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save_safetensors(tensors: Mapping[str, torch.Tensor], path, metadata: Mapping[str, str] | None = None):
    """Write ``tensors`` to ``path`` atomically (temporary file + fsync + rename)."""
    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    return atomic_write(path, lambda tmp: save_file(contiguous, tmp, metadata=meta))
