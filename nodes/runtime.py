"""What the nodes need from ComfyUI's runtime, with plain fallbacks when ComfyUI is absent.

Inside ComfyUI: devices from ``comfy.model_management``, progress bars from ``comfy.utils``, the
cancel button via ``throw_exception_if_processing_interrupted``, model files via ``folder_paths``.
Outside it (tests, scripts): CUDA if available else CPU, no progress bar, no cancel, and folders
from environment variables, each a list of folders separated by ``os.pathsep``:

- ``LONGVID_CHECKPOINTS_DIR`` — SVD checkpoints (ComfyUI's ``checkpoints``);
- ``LONGVID_EXTENSIONS_DIR`` — ExVideo / LongVid extension files (``longvid_extensions``);
- ``LONGVID_LORAS_DIR`` — LongVid LoRA files (ComfyUI's ``loras``);
- ``LONGVID_OUTPUT_DIR`` — where videos are written (default ``./output``).

Absolute paths are accepted wherever a file name from those lists is expected.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch

from longvid_core.problems import Problem, raise_problem
from longvid_core.run.video_io import writable_folder_problem

try:  # ComfyUI's runtime; absent in tests and plain scripts
    import comfy.model_management as comfy_mm
    import comfy.utils as comfy_utils
    import folder_paths
except ImportError:
    comfy_mm = comfy_utils = folder_paths = None

IN_COMFYUI = folder_paths is not None

CHECKPOINTS = "checkpoints"
EXTENSIONS = "longvid_extensions"  # the pack's own model folder: models/longvid_extensions
LORAS = "loras"  # ComfyUI's own LoRA folder (models/loras)
EXTENSION_SUFFIXES = {".safetensors"}
ENV_FOLDERS = {CHECKPOINTS: "LONGVID_CHECKPOINTS_DIR", EXTENSIONS: "LONGVID_EXTENSIONS_DIR",
               LORAS: "LONGVID_LORAS_DIR"}
ENV_OUTPUT = "LONGVID_OUTPUT_DIR"
PREVIEW_MAX_SIZE = 512  # ComfyUI's default --preview-size


def register_model_folders() -> None:
    """Register ``models/longvid_extensions`` with ComfyUI (safetensors only) and create it when
    missing, so a user sees where extension files go. A folder for the same kind in
    ``extra_model_paths.yaml`` is kept; ours is added next to it."""
    if not IN_COMFYUI:
        return
    folder = os.path.join(folder_paths.models_dir, EXTENSIONS)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:  # a read-only install still loads; extensions then come from other folders
        logging.warning("LongVid: could not create %s (%s); put extension files in a folder listed for "
                        "%s in extra_model_paths.yaml", folder, exc, EXTENSIONS)
    folder_paths.add_model_folder_path(EXTENSIONS, folder)
    folder_paths.folder_names_and_paths[EXTENSIONS][1].update(EXTENSION_SUFFIXES)


EXAMPLE_INPUTS = Path(__file__).resolve().parents[1] / "example_workflows" / "input"


def install_example_inputs() -> list[str]:
    """Copy the shipped workflows' input files (the extend workflow's video) into ComfyUI's input
    folder where missing, so the workflows run on a fresh install. Nothing is overwritten; returns
    the names copied."""
    if not IN_COMFYUI:
        return []
    import shutil

    copied = []
    target = Path(folder_paths.get_input_directory())
    for source in sorted(EXAMPLE_INPUTS.glob("*")):
        if source.is_file() and not (target / source.name).exists():
            try:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target / source.name)
                copied.append(source.name)
            except OSError as exc:  # a read-only input folder: the workflow then asks for a file
                logging.warning("LongVid: could not copy %s into %s (%s)", source.name, target, exc)
    return copied


# ---------------------------------------------------------------------------------------------
# Files


def _env_folders(kind: str) -> list[Path]:
    value = os.environ.get(ENV_FOLDERS[kind], "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def list_files(kind: str) -> list[str]:
    """File names (relative to their folder, subfolders included) for a combo box."""
    if IN_COMFYUI:
        return folder_paths.get_filename_list(kind)
    suffixes = EXTENSION_SUFFIXES if kind in (EXTENSIONS, LORAS) else {".safetensors", ".ckpt", ".pt", ".pth", ".bin"}
    names = set()
    for folder in _env_folders(kind):
        if folder.is_dir():
            names.update(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                         if p.is_file() and p.suffix.lower() in suffixes)
    return sorted(names)


def is_script_path(name) -> bool:
    """Outside ComfyUI (scripts, tests) a model combo may also hold an absolute path to a file."""
    return not IN_COMFYUI and isinstance(name, str) and os.path.isabs(name) and os.path.isfile(name)


def full_path(kind: str, name: str) -> Path:
    """The file for a combo value (or an absolute path); raises FileNotFoundError saying where it looked."""
    if os.path.isabs(name) and os.path.isfile(name):
        return Path(name)
    if IN_COMFYUI:
        found = folder_paths.get_full_path(kind, name)
        looked = folder_paths.get_folder_paths(kind) if kind in folder_paths.folder_names_and_paths else []
    else:
        looked = _env_folders(kind)
        found = next((str(f / name) for f in looked if (f / name).is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f"{name!r} was not found in the {kind} folders {[str(p) for p in looked]}; put the file there "
            f"(or set {ENV_FOLDERS.get(kind, kind)} outside ComfyUI)"
        )
    return Path(found)


def output_directory() -> Path:
    if IN_COMFYUI:
        return Path(folder_paths.get_output_directory())
    return Path(os.environ.get(ENV_OUTPUT, "output")).resolve()


def next_output_file(filename_prefix: str, suffix: str = ".mp4") -> tuple[Path, str, str]:
    """A new file for ``filename_prefix`` (may hold subfolders, e.g. ``video/LongVid``) in the output
    folder: ``(path, subfolder, file name)``, numbered like ComfyUI's saved images
    (``LongVid_00001_.mp4``)."""
    if IN_COMFYUI:
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory())
        filename = f"{name}_{counter:05}_{suffix}"
        return Path(folder) / filename, subfolder, filename
    root = output_directory()
    prefix = Path(filename_prefix)
    if prefix.is_absolute() or ".." in prefix.parts:
        raise ValueError(f"filename_prefix must stay inside the output folder; got {filename_prefix!r}")
    folder = root / prefix.parent
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(prefix.name) + r"_(\d{5})_")
    used = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
    filename = f"{prefix.name}_{max(used, default=0) + 1:05}_{suffix}"
    subfolder = "" if str(prefix.parent) == "." else prefix.parent.as_posix()
    return folder / filename, subfolder, filename


def output_path_problem(output_path: str) -> Problem | None:
    """Why an explicit mp4 path may not be written, or None. Relative paths name a file inside the
    output folder. Inside ComfyUI that is all a node may write (the server may be reachable by
    others, and core's savers refuse the same); scripts may also give absolute paths. The folder
    must take a new file (checked with a real one, before any sampling)."""
    if not output_path:
        return None
    if not output_path.lower().endswith(".mp4"):
        return Problem("output_path", "an .mp4 file name", repr(output_path))
    path = Path(output_path)
    if IN_COMFYUI and (path.is_absolute() or ".." in path.parts):
        return Problem("output_path", "a file inside ComfyUI's output folder, like 'videos/clip.mp4' (absolute paths "
                       "and '..' are refused: the server may be reachable by others)", repr(output_path))
    if ".." in path.parts and not path.is_absolute():
        return Problem("output_path", "a path that stays inside the output folder ('..' is refused)",
                       repr(output_path))
    target = path if path.is_absolute() else output_directory() / path
    if target.is_dir():
        return Problem("output_path", "an .mp4 file name", f"the folder {target}")
    return writable_folder_problem(target.parent, "output_path")


def explicit_output_file(output_path: str) -> tuple[Path, str | None, str | None]:
    """The file for an explicit ``output_path``: ``(path, subfolder, file name)``, the last two
    None for a file outside the output folder (no browser preview). Raises ValueError for a path
    that :func:`output_path_problem` refuses, or one that leaves the output folder through a link."""
    raise_problem(output_path_problem(output_path))
    given = Path(output_path)
    if given.is_absolute():
        return given, None, None
    root = output_directory().resolve()
    path = (root / given).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"output_path {output_path!r} leads outside the output folder {root} (through a link); "
                         "choose a file inside it")
    path.parent.mkdir(parents=True, exist_ok=True)
    subfolder = path.parent.relative_to(root).as_posix()
    return path, "" if subfolder == "." else subfolder, path.name


# ---------------------------------------------------------------------------------------------
# Devices


def torch_device() -> torch.device:
    if IN_COMFYUI:
        return comfy_mm.get_torch_device()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def offload_device() -> torch.device:
    """Where weights wait between runs (ComfyUI: its unet offload device, usually the CPU)."""
    if IN_COMFYUI:
        return comfy_mm.unet_offload_device()
    return torch_device()


def auto_dtype(device: torch.device) -> torch.dtype:
    """dtype "auto": fp16 where the device runs it well (ComfyUI's judgement when present), else fp32."""
    if IN_COMFYUI:
        if comfy_mm.should_use_fp16(device):
            return torch.float16
        if comfy_mm.should_use_bf16(device):
            return torch.bfloat16
        return torch.float32
    return torch.float16 if device.type == "cuda" else torch.float32


def load_models_on_device(patchers) -> None:
    """Ask ComfyUI's memory manager to put these ModelPatchers' weights on the device (it may
    offload other models to make room). No-op outside ComfyUI."""
    if IN_COMFYUI and patchers:
        comfy_mm.load_models_gpu(list(patchers), force_full_load=True)


# ---------------------------------------------------------------------------------------------
# Progress and cancel


class _NoProgressBar:
    def __init__(self, total):
        self.total = total
        self.current = 0

    def update_absolute(self, value, total=None, preview=None):
        self.current = value
        if total is not None:
            self.total = total


def progress_bar(total: int):
    """ComfyUI's ProgressBar (it forwards ``update_absolute(value, total, preview)`` to the browser)."""
    if IN_COMFYUI:
        return comfy_utils.ProgressBar(total)
    return _NoProgressBar(total)


def progress_callback(bar_stage: str, total: int):
    """The pipeline's progress callback for a node: a progress bar over ``bar_stage``'s unit (a
    finished frame's cheap RGB preview while sampling), and the cancel button at every report."""
    from longvid_core.networks.decoding import approximate_rgb
    from longvid_core.progress import SAMPLING

    bar = progress_bar(total)
    previewer = taesd_previewer() if bar_stage == SAMPLING else None

    def callback(progress):
        if progress.stage == bar_stage:
            preview = None
            if progress.stage == SAMPLING and progress.newest_latent is not None:
                if previewer is not None:  # ComfyUI's own TAESD preview, as its KSampler shows
                    preview = previewer.decode_latent_to_preview_image("JPEG", progress.newest_latent[:1])
                else:
                    preview = preview_image(approximate_rgb(progress.newest_latent))
            bar.update_absolute(progress.done, progress.total, preview)
        throw_if_interrupted()  # cancel takes effect after the call (or window) in flight

    return callback


def taesd_previewer():
    """ComfyUI's TAESD previewer for SD latents (SVD's VAE space) when the user chose TAESD
    previews and has the decoder in ``models/vae_approx``; None otherwise (the cheap RGB
    approximation is then used, which is also what ComfyUI's Latent2RGB preview does)."""
    if not IN_COMFYUI:
        return None
    try:
        import comfy.latent_formats
        import latent_preview
        from comfy.cli_args import LatentPreviewMethod, args
    except ImportError:
        return None
    if args.preview_method != LatentPreviewMethod.TAESD:
        return None
    previewer = latent_preview.get_previewer(torch_device(), comfy.latent_formats.SD15())
    return previewer if isinstance(previewer, latent_preview.TAESDPreviewerImpl) else None


def throw_if_interrupted() -> None:
    """Raise ComfyUI's interrupt exception when the user pressed cancel (POST /interrupt)."""
    if IN_COMFYUI:
        comfy_mm.throw_exception_if_processing_interrupted()


def preview_image(rgb: torch.Tensor):
    """``[h, w, 3]`` 0..1 -> the preview tuple ComfyUI's progress hook sends to the browser."""
    from PIL import Image

    pixels = (rgb.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return ("JPEG", Image.fromarray(pixels), PREVIEW_MAX_SIZE)
