"""The command line's inputs: its flags, argument types that refuse a bad value in one line
(``longvid: error: --flag: expected …, found …``), and the checks of ``longvid generate``'s
arguments that run before any model loads (:func:`check_generate_args`, :func:`load_model`).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..problems import InputError, Problem, describe_path, raise_problem, raised_in

PROG = "longvid"
EXIT_USER_ERROR = 2  # argparse's status for a bad command line
# Flags whose pipeline / node input has another name
FLAG_OF_INPUT = {"augmentation": "--noise-aug-strength", "output": "--out", "decode_overlap": "--decode-overlap",
                 "keyframe_starts": "--image", "input video": "IN"}


def flag(input_name: str) -> str:
    """A pipeline input name (``min_cfg``) -> its command-line flag (``--min-cfg``)."""
    if input_name.startswith("-"):
        return input_name
    return FLAG_OF_INPUT.get(input_name, "--" + input_name.replace("_", "-"))


def error_line(problem) -> str:
    """``longvid: error: --flag: expected …, found …`` on one line."""
    text = str(problem)
    name = getattr(problem, "input", None)
    if name and text.startswith(f"{name}:"):
        text = flag(name) + text[len(name):]
    text = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return f"{PROG}: error: {text}"


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in LongVid's one line (``--flag: expected …, found …``)."""

    def error(self, message):
        text = message
        if text.startswith("argument "):
            name, _, rest = text[len("argument "):].partition(": ")
            names = name.split("/")
            text = f"{next((n for n in names if n.startswith('--')), names[0])}: {_expected_found(rest)}"
        elif text.startswith("the following arguments are required: "):
            missing = text[len("the following arguments are required: "):].split(", ")
            text = f"{missing[0]}: expected a value, found none"
        self.exit(EXIT_USER_ERROR, f"{PROG}: error: {text}\n")


def _expected_found(message: str) -> str:
    """argparse's own wording ("invalid choice: 'x' (choose from ...)") as "expected …, found …"."""
    if message.startswith("invalid choice: "):
        found, _, rest = message[len("invalid choice: "):].partition(" (choose from ")
        return f"expected one of {rest.rstrip(')')}, found {found}"
    if message.startswith("expected one argument"):
        return "expected a value, found none"
    if message.startswith("invalid ") and " value: " in message:
        kind, _, found = message[len("invalid "):].partition(" value: ")
        return f"expected {'a whole number' if kind == 'int' else 'a number' if kind == 'float' else kind}, found {found}"
    return message


def number(kind=float, smallest=None, largest=None):
    """An argparse type: a finite ``kind`` within ``[smallest, largest]``; refused as expected/found."""
    what = "a whole number" if kind is int else "a finite number"
    bounds = (f" from {smallest} to {largest}" if smallest is not None and largest is not None
              else f" >= {smallest}" if smallest is not None else f" <= {largest}" if largest is not None else "")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}{bounds}, found {text!r}") from None
        if (kind is float and not math.isfinite(value)) or (smallest is not None and value < smallest) or (
                largest is not None and value > largest):
            raise argparse.ArgumentTypeError(f"expected {what}{bounds}, found {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def keyframe(text: str) -> tuple[Path, int, float]:
    """An argparse type: ``PICTURE@FRAME[:STRENGTH]`` -> (picture, frame index, strength, default 1)."""
    picture, at, place = text.rpartition("@")
    frame, _, strength = place.partition(":")
    expected = "PICTURE@FRAME[:STRENGTH] (a picture file, a frame index >= 0, a strength from 0 to 1)"
    try:
        frame, strength = int(frame), float(strength) if strength else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
    if not (picture and at) or frame < 0 or not 0.0 <= strength <= 1.0:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return Path(picture), frame, strength


def guide_frames(args, frames: int) -> list[tuple[str, Path, int, float]]:
    """The guides the flags ask for, ``(flag, picture, frame, strength)``: every ``--keyframe``,
    and ``--last-frame`` at the last frame."""
    guides = [("--keyframe", picture, frame, strength) for picture, frame, strength in args.keyframe or ()]
    if args.last_frame:
        guides.append(("--last-frame", Path(args.last_frame), frames - 1, 1.0))
    return guides


def guides_flag_problem(args, frames: int) -> Problem | None:
    """Guide flags that cannot work for a video of ``frames`` frames (before anything loads)."""
    if args.loop and args.last_frame:
        return Problem("--loop", "--loop or --last-frame, not both (a loop's last frame leads into its first)", "both")
    seen = {}
    for flag_name, picture, frame, _ in guide_frames(args, frames):
        if frame >= frames:
            return Problem(flag_name, f"a frame index within the video's frames 0..{frames - 1}",
                           f"{picture}@{frame}", "lower it or raise --frames")
        if frame in seen or (args.loop and frame == 0):
            other = seen.get(frame, "--loop (which holds frame 0 to the first picture)")
            return Problem(flag_name, "one guide per frame", f"frame {frame} also given by {other}")
        seen[frame] = flag_name
    return None


def t2i_model_problem(folder) -> Problem | None:
    """``--t2i-model`` must be a local diffusers folder: nothing is downloaded."""
    if (Path(folder) / "model_index.json").is_file():
        return None
    return Problem("--t2i-model", "a local diffusers folder (with model_index.json)", describe_path(folder))


def check_generate_args(args, settings: dict, sampling) -> None:
    """Every input of ``generate`` that can be judged without the model, before anything loads:
    the settings, the frame paths, device, first-frame source and whether the size fits memory
    (the video's path is checked by the :class:`~pipeline.Mp4Sink` made next, also before loading)."""
    from ..networks.decoding import decode_settings
    from . import pipeline
    from .inputs import device_problem, memory_problem
    from .video_io import writable_folder_problem

    raise_problem(pipeline.settings_problem(sampling.mode, sampling.frames, sampling.window, sampling.chunk, sampling.steps,
                                      sampling.cfg, sampling.min_cfg, sampling.context_sigma, sampling.partitions,
                                      sampling.lookahead, sampling.context_overlap, sampling.cache_interval,
                                      sampling.seed, sampling.scheduler, sampling.sampler_name))
    window, _ = decode_settings(settings["decode_window"], settings["decode_overlap"])
    for name in ("width", "height"):
        if settings[name] < 1:
            raise_problem(Problem(f"--{name}", "a positive number of pixels (a multiple of 64 for SVD)", settings[name]))
    if args.save_frames:
        folder = Path(args.save_frames)
        if folder.exists() and not folder.is_dir():
            raise_problem(Problem("--save-frames", "a folder for the PNG frames", f"the file {folder}"))
        raise_problem(writable_folder_problem(folder, "--save-frames"))
    if args.save_first_frame:
        target = Path(args.save_first_frame)
        if target.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
            raise_problem(Problem("--save-first-frame", "an image file name (.png, .jpg, ...)", target.name or str(target)))
        if target.is_dir():
            raise_problem(Problem("--save-first-frame", "an image file name", f"the folder {target}"))
        raise_problem(writable_folder_problem(target.parent, "--save-first-frame"))
    raise_problem(device_problem(args.device, "--device"))
    if args.prompt and args.image:
        raise_problem(Problem("--prompt", "one first frame: --image or --prompt, not both", "both"))
    if args.prompt and not args.t2i_model:
        raise_problem(Problem("--prompt", "--t2i-model beside it (a local diffusers text-to-image folder)", "none"))
    if args.t2i_model:
        raise_problem(t2i_model_problem(args.t2i_model))
    raise_problem(guides_flag_problem(args, sampling.frames))
    device = resolved_device(args.device)
    dtype_bytes = 2 if resolved_dtype(args.dtype, device) in ("fp16", "bf16") else 4
    raise_problem(memory_problem(settings["width"], settings["height"], sampling.frames, window, dtype_bytes, device,
                           holds_all_frames=sampling.mode == pipeline.CONTEXT_WINDOWS))


def resolved_device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def resolved_dtype(dtype: str | None, device: str) -> str:
    return dtype or ("fp16" if device.startswith("cuda") else "fp32")


def model_files(args, svd_path: Path) -> list[tuple[str, Path, str]]:
    files = [("--svd", svd_path, "svd")]
    files += [("--extension", Path(args.extension), "extension")] if args.extension else []
    files += [("--lora", Path(args.lora), "lora")] if args.lora else []
    return files


def load_model(args, svd_path: Path, device: str, dtype: str):
    """:func:`load_svd` with a file the loader refuses reported under its own flag."""
    from ..weights.checkpoint_io import CheckpointError
    from ..weights.loading import load_svd
    from .inputs import MODEL_EXPECTED

    try:
        return load_svd(svd_path, extension=args.extension, device=device, dtype=dtype, lora=args.lora,
                        lora_strength=args.lora_strength, compile=args.compile or False)
    except (ValueError, KeyError) as e:  # CheckpointError and InputError are ValueErrors
        if not isinstance(e, (CheckpointError, InputError)) and not raised_in(e, (Path(__file__).parents[1],)):
            raise
        text = str(e).strip("'\"")
        name, _, kind = next(((n, p, k) for n, p, k in reversed(model_files(args, svd_path)) if str(p) in text),
                             model_files(args, svd_path)[0])
        raise InputError(Problem(name, MODEL_EXPECTED[kind], text)) from e
