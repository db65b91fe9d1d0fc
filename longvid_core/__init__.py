"""LongVid's engine: SVD/ExSVD models, loading, schedules, samplers and decoding.

The ComfyUI nodes, the ``longvid`` command line and the trainer all call into this package.
Data flows one way: images -> :func:`encode_image` (conditioning) -> a sampler over
``model.denoise`` -> latents -> ``model.decode`` -> frames -> a writer.
"""

import logging

# diffusers imports bitsandbytes whenever it is installed (the trainer's --optimizer adamw8bit), and its
# CPU backend then warns on every import about an optional 4-bit kernel package LongVid never uses
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

from .checkpoint_io import CheckpointError  # noqa: E402
from .conditioning import SVDCond  # noqa: E402
from .keymaps.identify import identify_checkpoint  # noqa: E402
from .loading import load_svd, save_svd  # noqa: E402
from .model import SVDModel  # noqa: E402
from .problems import InputError, Problem  # noqa: E402

__all__ = ["CheckpointError", "InputError", "Problem", "SVDCond", "SVDModel", "identify_checkpoint", "load_svd",
           "save_svd"]


def __getattr__(name):
    # ExVideo lives in its own module; import it on first use so `import longvid_core` stays light
    if name in ("save_extension", "extend_unet"):
        from . import exvideo

        return getattr(exvideo, name)
    raise AttributeError(f"module 'longvid_core' has no attribute {name!r}")
