"""LongVid's engine: SVD/ExSVD models, loading, schedules, samplers and decoding.

The ComfyUI nodes, the ``longvid`` command line and the trainer all call into this package.
Data flows one way: images -> :func:`encode_image` (conditioning) -> a sampler over
``model.denoise`` -> latents -> ``model.decode`` -> frames -> a writer.
"""

from .checkpoint_io import CheckpointError
from .conditioning import SVDCond
from .keymaps.identify import identify_checkpoint
from .loading import load_svd, save_svd
from .model import SVDModel

__all__ = ["CheckpointError", "SVDCond", "SVDModel", "identify_checkpoint", "load_svd", "save_svd"]


def __getattr__(name):
    # ExVideo lives in its own module; import it on first use so `import longvid_core` stays light
    if name in ("save_extension", "extend_unet"):
        from . import exvideo

        return getattr(exvideo, name)
    raise AttributeError(f"module 'longvid_core' has no attribute {name!r}")
