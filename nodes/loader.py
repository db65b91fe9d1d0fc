"""LongVidLoadModel: an SVD checkpoint, optionally with an ExVideo / LongVid extension and a LongVid LoRA."""

from __future__ import annotations

from . import model_cache, runtime

NO_EXTENSION = "none"
NO_LORA = "none"


class LongVidLoadModel:
    DESCRIPTION = (
        "Loads an SVD / SVD-XT checkpoint (models/checkpoints, e.g. svd_xt.safetensors) and, optionally, an "
        "ExVideo or LongVid extension from models/longvid_extensions (e.g. the released "
        "ExVideo-SVD-128f-v1/model.fp16.safetensors) and a LongVid LoRA from models/loras (trained with "
        "training/train.py --mode lora), merged after the extension. The model is reused while these inputs and "
        "files are unchanged."
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
            },
            "optional": {
                "lora": ([NO_LORA] + runtime.list_files(runtime.LORAS), {
                    "default": NO_LORA,
                    "tooltip": "LongVid LoRA file from models/loras (training/train.py --mode lora), merged into "
                               "the weights after the extension; 'none' for no LoRA."}),
                "lora_strength": ("FLOAT", {
                    "default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                    "tooltip": "Scale of the LoRA's update (0: the model without it)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, ckpt_name, extension, dtype, lora=NO_LORA, lora_strength=1.0):
        # Re-run (and reload) when a file was replaced under the same name.
        stamps = []
        for kind, name in ((runtime.CHECKPOINTS, ckpt_name), (runtime.EXTENSIONS, extension), (runtime.LORAS, lora)):
            if name in (NO_EXTENSION, NO_LORA):
                continue
            try:
                path = runtime.full_path(kind, name)
                stamps.append(f"{path}:{path.stat().st_mtime_ns}")
            except (FileNotFoundError, OSError):
                stamps.append(f"{name}:missing")
        return "|".join(stamps) + f"|{dtype}|{lora_strength}"

    def load(self, ckpt_name, extension, dtype, lora=NO_LORA, lora_strength=1.0):
        checkpoint = runtime.full_path(runtime.CHECKPOINTS, ckpt_name)
        extension_path = None if extension == NO_EXTENSION else runtime.full_path(runtime.EXTENSIONS, extension)
        lora_path = None if lora == NO_LORA else runtime.full_path(runtime.LORAS, lora)
        return (model_cache.load_model(checkpoint, extension_path, dtype, lora_path, lora_strength),)
