"""What a user hands a run from outside, read and checked before any model work: the device, image
files, model files, and whether a size fits the machine's memory at all.

Each check returns a :class:`~longvid_core.problems.Problem` naming its input (the command line
shows it under the flag, the nodes under the widget) or None.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..problems import InputError, Problem, describe_path

IMAGE_EXPECTED = "a picture file (PNG, JPEG, WebP, TIFF, ...)"


def device_problem(device: str | None, input: str = "device") -> Problem | None:
    """``device`` names a device this machine has: cpu, cuda, cuda:N, mps."""
    if device is None:
        return None
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return Problem(input, "cpu, cuda, cuda:N or mps", repr(device))
    if parsed.type == "cpu":
        return None
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return Problem(input, "a device this machine has (no CUDA GPU is visible to torch here)", device,
                           "use --device cpu")
        if parsed.index is not None and parsed.index >= count:
            return Problem(input, f"cuda:0 to cuda:{count - 1} ({count} GPU(s) visible)", device)
        return None
    if parsed.type == "mps":
        return None if torch.backends.mps.is_available() else Problem(input, "a device this machine has (no MPS)",
                                                                       device)
    return Problem(input, "cpu, cuda, cuda:N or mps", repr(device))


def device_memory(device) -> int:
    """Bytes of memory on ``device``: a GPU's total, or the machine's physical memory for the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device.index or 0).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: no limit known
        return 1 << 62


# The largest tensors a run holds, counted per value. They are lower bounds of what a run needs, so a
# size refused by them cannot run however the rest is arranged:
# - decoding: SVD's temporal VAE decoder runs its last block (128 channels) at full resolution over
#   a whole decode window at once: window x 128 x H x W values;
# - context windows: the whole video's latents and the two fusion sums stay in host memory:
#   3 x frames x 4 x H/8 x W/8 float32 values.
VAE_LAST_CHANNELS = 128


def memory_problem(width: int, height: int, frames: int, decode_window: int, dtype_bytes: int, device,
                   holds_all_frames: bool = False) -> Problem | None:
    """Whether the size can fit ``device``'s memory (see the comment above for the rule)."""
    available = device_memory(device)
    decode = decode_window * VAE_LAST_CHANNELS * width * height * dtype_bytes
    if decode > available:
        return Problem("width", f"a size whose decoding fits the {_gib(available)} of {device} (decoding holds "
                       f"decode_window x {VAE_LAST_CHANNELS} channels x width x height values of {dtype_bytes} bytes "
                       f"at once: {decode_window} x {VAE_LAST_CHANNELS} x {width} x {height} x {dtype_bytes} = "
                       f"{_gib(decode)})", f"{width}x{height}", "use a smaller size or decode window")
    if holds_all_frames:
        store = 3 * frames * 4 * (width // 8) * (height // 8) * 4
        if store > available:
            return Problem("frames", f"a length whose latents fit the {_gib(available)} of host memory (context "
                           f"windows hold 3 x frames x 4 x {height // 8} x {width // 8} float32 values: "
                           f"{_gib(store)})", frames, "use fewer frames or the progressive mode")
    return None


def _gib(size: int) -> str:
    return f"{size / 2**30:,.1f} GiB"


def image_array(img) -> np.ndarray:
    """A PIL image -> float32 ``[H, W, 3]`` in 0..1, scaled from its own bit depth: 16-bit and 32-bit
    integer images by their range (not clipped to white as an 8-bit conversion does), float images
    as they are (clipped to 0..1), palettes, grey and alpha images through RGB."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if mode == "F":
            scaled = values
        else:
            # 'I' holds 16-bit PNG/TIFF samples in Pillow, and 32-bit ones from a few TIFF writers
            scaled = values / (65535.0 if values.max(initial=0) <= 65535 else 4294967295.0)
        grey = np.clip(scaled, 0.0, 1.0).astype(np.float32)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode != "RGB":
        img = img.convert("RGBA").convert("RGB") if "A" in mode or mode == "P" else img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def read_image(path, input: str = "image") -> torch.Tensor:
    """An image file -> ``[1, H, W, 3]`` float32 in 0..1 (EXIF orientation applied). Anything that is
    not a readable picture raises :class:`InputError` naming the file and what PIL found."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(Problem(input, IMAGE_EXPECTED, describe_path(path)))
    try:
        with Image.open(path) as img:
            img.load()
            array = image_array(ImageOps.exif_transpose(img))
    except UnidentifiedImageError:
        raise InputError(Problem(input, IMAGE_EXPECTED, f"{describe_path(path)}, not a picture PIL reads")) from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or damaged image data
        raise InputError(Problem(input, IMAGE_EXPECTED, f"{describe_path(path)}, which cannot be read: {e}")) from None
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise InputError(Problem(input, IMAGE_EXPECTED, f"an empty image in {path}"))
    return torch.from_numpy(np.ascontiguousarray(array))[None]


VIDEO_EXPECTED = "a video file (mp4, webm, mov, ... as PyAV reads it)"


def read_input_video(path, input: str = "input video"):
    """A video file -> (frames ``[n, H, W, 3]`` float32 in 0..1, fps as a Fraction). Anything that is
    not a readable video raises :class:`InputError` naming the file and what was wrong."""
    import av

    from .video_io import read_video

    path = Path(path)
    if not path.is_file():
        raise InputError(Problem(input, VIDEO_EXPECTED, describe_path(path)))
    try:
        return read_video(path)
    except (av.error.FFmpegError, OSError, ValueError, IndexError) as e:  # IndexError: no video stream
        raise InputError(Problem(input, VIDEO_EXPECTED, f"{describe_path(path)}, which cannot be read: {e}")) from None


MODEL_EXPECTED = {
    "svd": "an SVD checkpoint (an SGM single .safetensors file, or a diffusers folder)",
    "extension": "an ExVideo (DiffSynth layout) or LongVid extension .safetensors file",
    "lora": "a LongVid LoRA .safetensors file (training/train.py --mode lora)",
}


def model_file_problem(path, kind: str, input: str | None = None) -> Problem | None:
    """Whether ``path`` can be the ``kind`` ("svd", "extension", "lora") file: it exists and, when a
    single file, its safetensors header reads (a text file, an empty or cut-off download fail here,
    in a header read, before anything is loaded)."""
    from ..weights.checkpoint_io import CheckpointError, open_tensors

    input = input or kind
    expected = MODEL_EXPECTED[kind]
    path = Path(path)
    if not path.exists():
        return Problem(input, expected, describe_path(path))
    if path.is_dir():
        if kind == "svd":
            return None  # a diffusers folder: its parts are checked as they load
        return Problem(input, expected, describe_path(path))
    if not os.access(path, os.R_OK):
        return Problem(input, expected, f"{path}, which this user may not read")
    try:
        open_tensors(path)
    except (CheckpointError, ValueError, OSError) as e:
        reason = str(e).replace(str(path), "").strip(" :;") or type(e).__name__
        return Problem(input, expected, f"{describe_path(path)}: {reason}")
    return None


__all__ = ["device_memory", "device_problem", "image_array", "memory_problem", "model_file_problem", "read_image"]
