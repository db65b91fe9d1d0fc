"""LongVidLoadModel: an SVD checkpoint, optionally with an ExVideo / LongVid extension."""

from __future__ import annotations

from . import model_cache, runtime

NO_EXTENSION = "none"


class LongVidLoadModel:
    DESCRIPTION = (
        "Loads an SVD / SVD-XT checkpoint (models/checkpoints, e.g. svd_xt.safetensors) and, optionally, an "
        "ExVideo or LongVid extension from models/longvid_extensions (e.g. the released "
        "ExVideo-SVD-128f-v1/model.fp16.safetensors). The model is reused while these inputs and files are unchanged."
    )
    CATEGORY = "LongVid"
    RETURN_TYPES = ("LONGVID_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("SVD (or ExVideo-extended SVD) for the LongVid nodes.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ckpt_name": (runtime.list_files(runtime.CHECKPOINTS), {
                    "tooltip": "SVD single-file checkpoint from models/checkpoints (svd_xt.safetensors, "
                               "svd_xt_1_1.safetensors, ...)."}),
                "extension": ([NO_EXTENSION] + runtime.list_files(runtime.EXTENSIONS), {
                    "default": NO_EXTENSION,
                    "tooltip": "ExVideo (DiffSynth layout) or LongVid extension file from models/longvid_extensions; "
                               "'none' for plain SVD (25-frame clips)."}),
                "dtype": (model_cache.DTYPE_CHOICES, {
                    "default": "auto",
                    "tooltip": "Weights precision. auto: fp16 on GPUs that run it well, otherwise fp32."}),
            }
        }

    @classmethod
    def IS_CHANGED(cls, ckpt_name, extension, dtype):
        # Re-run (and reload) when a file was replaced under the same name.
        stamps = []
        for kind, name in ((runtime.CHECKPOINTS, ckpt_name), (runtime.EXTENSIONS, extension)):
            if name == NO_EXTENSION:
                continue
            try:
                path = runtime.full_path(kind, name)
                stamps.append(f"{path}:{path.stat().st_mtime_ns}")
            except (FileNotFoundError, OSError):
                stamps.append(f"{name}:missing")
        return "|".join(stamps) + f"|{dtype}"

    def load(self, ckpt_name, extension, dtype):
        checkpoint = runtime.full_path(runtime.CHECKPOINTS, ckpt_name)
        extension_path = None if extension == NO_EXTENSION else runtime.full_path(runtime.EXTENSIONS, extension)
        return (model_cache.load_model(checkpoint, extension_path, dtype),)
