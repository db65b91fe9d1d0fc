"""LongVid's engine: SVD/ExSVD models, loading, schedules, samplers and decoding.

The ComfyUI nodes, the ``longvid`` command line and the trainer all call into this package.
Data flows one way: images -> :func:`encode_image` (conditioning) -> a sampler over
``model.denoise`` -> latents -> ``model.decode`` -> frames -> a writer. The rooms, and the path
one run takes through them, are mapped at the top of docs/engine.md:

- ``networks/`` the UNet, VAE, image encoder, denoiser, loaded model and ExVideo's modules;
- ``weights/`` files on disk: loading, key maps, ExVideo and LoRA layouts, metadata;
- ``sampling/`` schedules, one file per sampling method, the shared walk, step rules;
- ``evaluation/`` synthetic scenes, video metrics, tiny test models, the schedule picture;
- ``run/`` the pipeline of one generation, frames, video files and the command line;
- ``problems.py``, ``shapes.py``, ``progress.py``: the words every room shares.

The public names below are imported on first use, so ``import longvid_core`` (and the command
line's ``--help``) stays light.
"""

import logging

# diffusers imports bitsandbytes whenever it is installed (the trainer's --optimizer adamw8bit), and its
# CPU backend then warns on every import about an optional 4-bit kernel package LongVid never uses
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__all__ = ["CheckpointError", "InputError", "Problem", "SVDCond", "SVDModel", "extend_unet", "identify_checkpoint",
           "load_svd", "pipeline", "save_extension", "save_svd"]


def __getattr__(name):
    # plain import statements (not importlib) so that the import-graph test sees these edges too
    if name in ("InputError", "Problem"):
        from . import problems as home
    elif name == "CheckpointError":
        from .weights import checkpoint_io as home
    elif name == "SVDCond":
        from .networks import conditioning as home
    elif name == "SVDModel":
        from .networks import model as home
    elif name == "extend_unet":
        from .networks import exvideo as home
    elif name == "identify_checkpoint":
        from .weights.keymaps import identify as home
    elif name in ("load_svd", "save_svd"):
        from .weights import loading as home
    elif name == "save_extension":
        from .weights import exvideo_file as home
    elif name == "pipeline":  # the module: from longvid_core import pipeline
        from .run import pipeline

        return pipeline
    else:
        raise AttributeError(f"module 'longvid_core' has no attribute {name!r}")
    return getattr(home, name)
