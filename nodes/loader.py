"""LongVidLoadModel: an SVD checkpoint, optionally with an ExVideo / LongVid extension and a LongVid LoRA."""

from __future__ import annotations

from . import model_cache, runtime
from .spec import Boolean, Combo, Float, NodeSpec, Output
from .validation import check_widgets, first_problem, raise_if

NO_EXTENSION = "none"  # also the "no file" choice of any optional file combo
NO_LORA = NO_EXTENSION


def _checkpoints() -> list[str]:
    return runtime.list_files(runtime.CHECKPOINTS)


def _extensions() -> list[str]:
    return [NO_EXTENSION] + runtime.list_files(runtime.EXTENSIONS)


def _loras() -> list[str]:
    return [NO_LORA] + runtime.list_files(runtime.LORAS)


class LongVidLoadModel:
    SPEC = NodeSpec(
        node_id="LongVidLoadModel",
        display_name="LongVid Load SVD (+ ExVideo)",
        description=(
            "Loads an SVD / SVD-XT checkpoint (models/checkpoints, e.g. svd_xt.safetensors) and, optionally, an "
            "ExVideo or LongVid extension from models/longvid_extensions (e.g. the released "
            "ExVideo-SVD-128f-v1/model.fp16.safetensors) and a LongVid LoRA from models/loras (trained with "
            "training/train.py --mode lora), merged after the extension. The model is reused while these inputs and "
            "files are unchanged."),
        function="load",
        report_under="ckpt_name",
        inputs=(
            Combo("ckpt_name", _checkpoints, None, model_folder=runtime.CHECKPOINTS, tooltip=(
                "SVD single-file checkpoint from models/checkpoints (svd_xt.safetensors, svd_xt_1_1.safetensors, "
                "...).")),
            Combo("extension", _extensions, NO_EXTENSION, model_folder=runtime.EXTENSIONS, tooltip=(
                "ExVideo (DiffSynth layout) or LongVid extension file from models/longvid_extensions; 'none' for "
                "plain SVD (25-frame clips).")),
            Combo("dtype", model_cache.DTYPE_CHOICES, "auto", advanced=True,
                  tooltip="Weights precision. auto: fp16 on GPUs that run it well, otherwise fp32."),
            # added after the first release: optional and last, so saved workflows keep their values
            Combo("lora", _loras, NO_LORA, model_folder=runtime.LORAS, optional=True, tooltip=(
                "LongVid LoRA file from models/loras (training/train.py --mode lora), merged into the weights after "
                "the extension; 'none' for no LoRA.")),
            Float("lora_strength", 1.0, -4.0, 4.0, step=0.05, optional=True,
                  tooltip="Scale of the LoRA's update (0: the model without it)."),
            Boolean("compile", False, optional=True, advanced=True, tooltip=(
                "torch.compile the UNet: faster calls after a compile at the first call of each size (minutes). "
                "Where compiling fails the model runs uncompiled and the log says why.")),
        ),
        outputs=(Output("model", "LONGVID_MODEL", "SVD (or ExVideo-extended SVD) for the LongVid nodes."),),
    )

    @classmethod
    def validate_inputs(cls, ckpt_name=None, extension=None, dtype=None, lora=None, lora_strength=None, compile=None):
        """Every file name must be one of the files the folders hold now (ComfyUI 0.3.64 does not check a V3
        combo's value itself), so a missing file is refused before any other node of the prompt runs."""
        files = {"ckpt_name": ckpt_name, "extension": extension, "lora": lora}
        listed = {name: value for name, value in files.items() if not runtime.is_script_path(value)}
        return first_problem(check_widgets(cls, **listed, dtype=dtype, lora_strength=lora_strength))

    @classmethod
    def fingerprint_inputs(cls, **inputs):
        """Same inputs and same files -> the cached model is reused; a file replaced under the same
        name (new modification time) makes the node run again and reload."""
        stamps = []
        for spec in cls.SPEC.inputs:
            value = inputs.get(spec.name)
            if spec.model_folder is None or value in (None, NO_EXTENSION):
                stamps.append(f"{spec.name}={value!r}")
                continue
            try:
                path = runtime.full_path(spec.model_folder, value)
                stamps.append(f"{path}:{path.stat().st_mtime_ns}")
            except (FileNotFoundError, OSError):
                stamps.append(f"{value}:missing")
        return "|".join(stamps)

    def load(self, ckpt_name, extension, dtype, lora=NO_LORA, lora_strength=1.0, compile=False):
        raise_if(self.validate_inputs(ckpt_name, extension, dtype, lora, lora_strength))
        checkpoint = runtime.full_path(runtime.CHECKPOINTS, ckpt_name)
        extension_path = None if extension == NO_EXTENSION else runtime.full_path(runtime.EXTENSIONS, extension)
        lora_path = None if lora == NO_LORA else runtime.full_path(runtime.LORAS, lora)
        return (model_cache.load_model(checkpoint, extension_path, dtype, lora_path, lora_strength, compile),)
