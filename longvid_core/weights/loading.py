"""``load_svd``: SVD weights (SGM single file or diffusers folder) -> one :class:`~longvid_core.networks.model.SVDModel`.

Architecture is always read from the tensors (see each key map's ``config_from_shapes``), so a
tiny test checkpoint loads through the same path as ``svd_xt.safetensors``. Weights are built on
the meta device and filled tensor by tensor in the target dtype (``assign=True``): a full-size
checkpoint is never held twice, and fp16/bf16 loads never make an fp32 copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..networks import image_encoder as image_encoder_lib
from ..networks import vae as vae_lib
from ..networks.compile import compile_unet
from ..networks.model import SVDModel
from ..networks.unet import LongVidUNet, config_from_diffusers_shapes
from ..problems import finite_problem, raise_problem
from . import base_identity
from .checkpoint_io import CheckpointError, atomic_save_safetensors, open_tensors
from .exvideo_file import apply_extension_file
from .keymaps import sgm_clip, sgm_unet, sgm_vae
from .keymaps.identify import identify_checkpoint
from .lora import META_EXTENSION, apply_lora_file
from .trained_for import TrainedFor

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}
DIFFUSERS_COMPONENTS = ("unet", "vae", "image_encoder")


def resolve_dtype(dtype) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype; found {dtype!r}") from None


def sgm_state_dict(model: SVDModel) -> dict[str, torch.Tensor]:
    """All weights of ``model`` under SVD's SGM single-file names (as in ``svd_xt.safetensors``)."""
    out = {}
    parts = (
        (sgm_unet, model.unet, lambda sd: sgm_unet.from_ours(sd, model.unet.config)),
        (sgm_vae, model.vae, sgm_vae.from_ours),
        (sgm_clip, model.image_encoder, sgm_clip.from_ours),
    )
    for keymap, module, convert in parts:
        for k, v in convert(module.state_dict()).items():
            out[keymap.PREFIX + k] = v
    return out


def save_svd(model: SVDModel, path, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model as an SGM single file (the layout ComfyUI users keep), atomically, with
    ``metadata`` (e.g. :meth:`TrainedFor.to_metadata`) next to ``format``."""
    return atomic_save_safetensors(sgm_state_dict(model), path, metadata={"format": "pt", **(metadata or {})})


def _assign(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str, source) -> torch.nn.Module:
    """Fill a meta-device module with ``state`` (strict), raising a clear error on mismatch."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label}: {names[:5]}{' ...' if len(names) > 5 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if names
        )
        raise CheckpointError(f"{source}: the {what} weights do not fit the architecture read from them ({detail})")
    module.load_state_dict(state, strict=True, assign=True)
    for name, buf in list(module.named_buffers()):
        if buf.is_meta:
            # non-persistent buffers (e.g. CLIP's position_ids) are not in the file: rebuild them
            owner = module.get_submodule(name.rsplit(".", 1)[0]) if "." in name else module
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "position_ids":
                device = next(module.parameters()).device
                owner.register_buffer(leaf, torch.arange(buf.shape[-1], device=device).expand(buf.shape),
                                      persistent=False)
            else:
                raise CheckpointError(f"{source}: {what} buffer {name} was not set by the checkpoint")
    return module.eval().requires_grad_(False)


def _build_unet(tensors: Mapping, source, device) -> LongVidUNet:
    config = sgm_unet.config_from_shapes(tensors.shapes) if hasattr(tensors, "shapes") else None
    state = sgm_unet.to_ours(tensors, config)
    with torch.device("meta"):
        unet = LongVidUNet(**config)
    return _assign(unet, state, "UNet", source)


def _load_sgm_file(path: Path, dtype, device, allow_pickle) -> SVDModel:
    tensors = open_tensors(path, dtype=dtype, device=device, allow_pickle=allow_pickle)
    kind = identify_checkpoint(tensors.keys())
    if kind.startswith("an ExVideo extension"):
        raise CheckpointError(
            f"{path}: this file is {kind}: it holds only the extended temporal layers, not a whole SVD. "
            "Load a base SVD-XT checkpoint and pass this file as its extension: "
            f"load_svd(<svd_xt.safetensors>, extension={str(path)!r})"
        )
    if kind != "svd":
        raise CheckpointError(
            f"{path}: expected an SVD checkpoint (model.diffusion_model.* with temporal layers, "
            f"first_stage_model.*, {sgm_clip.PREFIX}*); this file looks like {kind}"
        )
    groups = {}
    for keymap, what in ((sgm_unet, "UNet"), (sgm_vae, "VAE"), (sgm_clip, "image encoder")):
        view = tensors.with_prefix(keymap.PREFIX)
        if len(view) == 0:
            raise CheckpointError(f"{path}: expected {what} tensors under {keymap.PREFIX}*; found none")
        groups[what] = view
    known = tuple(k.PREFIX for k in (sgm_unet, sgm_vae, sgm_clip))
    stray = [k for k in tensors.keys() if not k.startswith(known) and not sgm_clip.is_ignored_sgm_key(k)]
    if stray:
        raise CheckpointError(f"{path}: tensors that are not part of SVD: {stray[:5]}")

    unet = _build_unet(groups["UNet"], path, device)
    vae_config = sgm_vae.config_from_shapes(groups["VAE"].shapes)
    vae = _assign(vae_lib.build_vae(vae_config, device="meta"), sgm_vae.to_ours(groups["VAE"]), "VAE", path)
    clip_config = sgm_clip.config_from_shapes(groups["image encoder"].shapes)
    encoder = _assign(
        image_encoder_lib.build_image_encoder(clip_config, device="meta"),
        sgm_clip.to_ours(groups["image encoder"]), "image encoder", path,
    )
    return SVDModel(unet, vae, encoder, source=str(path))


def _component_file(folder: Path, name: str, dtype) -> Path:
    sub = folder / name
    if not sub.is_dir() or not (sub / "config.json").is_file():
        present = sorted(p.name for p in folder.iterdir() if p.is_dir())
        raise CheckpointError(
            f"{folder}: a diffusers SVD folder needs {', '.join(c + '/' for c in DIFFUSERS_COMPONENTS)} "
            f"each with config.json and weights; {name}/ is missing or has no config.json (found: {present})"
        )
    files = sorted(sub.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{sub}: expected a *.safetensors weights file; found {sorted(p.name for p in sub.iterdir())}")
    # prefer the variant matching the requested precision (diffusers' ``*.fp16.safetensors``)
    want_fp16 = dtype == torch.float16
    files.sort(key=lambda p: (".fp16." in p.name) != want_fp16)
    return files[0]


def _load_diffusers_folder(folder: Path, dtype, device) -> SVDModel:
    paths = {name: _component_file(folder, name, dtype) for name in DIFFUSERS_COMPONENTS}
    unet_tensors = open_tensors(paths["unet"], dtype=dtype, device=device)
    config = config_from_diffusers_shapes(unet_tensors.shapes)
    with torch.device("meta"):
        unet = LongVidUNet(**config)
    unet = _assign(unet, {k: unet_tensors[k] for k in unet_tensors}, "UNet", paths["unet"])
    vae_tensors = open_tensors(paths["vae"], dtype=dtype, device=device)
    vae = _assign(vae_lib.build_vae(vae_lib.config_from_json(paths["vae"].parent / "config.json"), device="meta"),
                  {k: vae_tensors[k] for k in vae_tensors}, "VAE", paths["vae"])
    enc_tensors = open_tensors(paths["image_encoder"], dtype=dtype, device=device)
    encoder = _assign(
        image_encoder_lib.build_image_encoder(
            image_encoder_lib.config_from_json(paths["image_encoder"].parent / "config.json"), device="meta"),
        {k: enc_tensors[k] for k in enc_tensors}, "image encoder", paths["image_encoder"])
    return SVDModel(unet, vae, encoder, source=str(folder))


def load_svd(path, extension=None, device=None, dtype=None, allow_pickle: bool = False,
             attention: str = "sdpa", lora=None, lora_strength: float = 1.0, merge_lora: bool = True,
             compile: bool | str = False) -> SVDModel:
    """Load SVD / SVD-XT weights, optionally with an ExVideo or LongVid extension and a LoRA on top.

    ``path``: an SGM single file (``svd_xt.safetensors`` as ComfyUI users keep it) or a diffusers
    folder (``unet/``, ``vae/``, ``image_encoder/``). ``dtype``: torch dtype or "fp32"/"fp16"/"bf16"
    (default fp32). ``device``: where the weights go (read there tensor by tensor).
    ``attention``: "sdpa" (default, batch-sliced for big temporal batches) or "xformers".
    ``lora``: a LongVid LoRA file (:mod:`longvid_core.weights.lora`), applied after the extension at
    ``lora_strength``: merged into the weights (``merge_lora=True``, no cost per step) or kept as
    separate LoRA layers.
    ``compile``: torch.compile the UNet (True: inductor, or a backend name); where compiling fails
    the UNet runs uncompiled, with a warning (:mod:`longvid_core.networks.compile`).
    """
    path = Path(path)
    dtype = resolve_dtype(dtype)
    raise_problem(finite_problem("lora_strength", lora_strength))  # a NaN strength makes every weight NaN
    if not path.exists():
        raise FileNotFoundError(f"no SVD checkpoint at {path}")
    if path.is_dir():
        model = _load_diffusers_folder(path, dtype, device)
    else:
        model = _load_sgm_file(path, dtype, device, allow_pickle)
    model.unet.set_attention_backend(attention)
    model.trained_for = TrainedFor.from_metadata(_file_metadata(path))
    # taken before anything is applied on top: files made on this base record this identity
    model.base_identity = base_identity.content_identity(model.unet)
    if extension is not None:
        apply_extension_file(model, extension)
        metadata = _file_metadata(extension)
        # what the extension's temporal layers were trained for is what the model now does
        model.trained_for = TrainedFor.from_metadata(metadata) or model.trained_for
        check_made_for_base(model, f"extension {Path(extension).name}", metadata)
    if lora is not None:
        applied = apply_lora_file(model, lora, lora_strength, merge=merge_lora)
        model.trained_for = applied.trained_for or model.trained_for  # the LoRA's training is the last word
        check_made_for_base(model, f"LoRA {Path(lora).name}", applied.metadata)  # warns, as for extensions
        beside = applied.metadata.get(META_EXTENSION)
        if beside and extension is None:
            model.warnings.append(f"LoRA {Path(lora).name} was trained beside the extension {beside}, but no "
                                  "extension is loaded; load it with that extension")
    if compile:
        compile_unet(model.unet, "inductor" if compile is True else compile, on_problem=model.warnings.append)
    return model


def check_made_for_base(model: SVDModel, what: str, metadata: Mapping[str, str]) -> str | None:
    """Warn (``model.warnings``) when a file applied to ``model`` records another base's identity.
    Files without one (the ExVideo release, other tools) are taken as they are."""
    recorded = base_identity.read_identity(metadata)
    if recorded is None or model.base_identity is None:
        return None
    message = base_identity.mismatch_message(what, recorded, model.base_identity,
                                             metadata.get("longvid.base_source", ""))
    if message is not None:
        model.warnings.append(message)
    return message


def _file_metadata(path) -> dict:
    path = Path(path)
    if path.is_file() and path.suffix == ".safetensors":
        return getattr(open_tensors(path), "metadata", None) or {}
    return {}
