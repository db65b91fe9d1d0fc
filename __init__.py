"""LongVid — a ComfyUI node pack for long videos (ExVideo-SVD, PA-VDM progressive sampling).

ComfyUI imports this file as the pack's module and registers the nodes through
``comfy_entrypoint`` (its V3 node API; see ``nodes/comfy_v3.py``). There is deliberately no
``NODE_CLASS_MAPPINGS`` here: ComfyUI would then load the pack the V1 way and ignore the entry
point. Outside ComfyUI (plain ``import``, pytest, pip) this file imports cleanly: the node layer
only touches ComfyUI's runtime (``comfy``, ``comfy_api``, ``folder_paths``) behind guarded imports.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
# The node layer imports ``longvid_core`` by absolute name; ComfyUI does not put pack folders on
# sys.path. Appending (not prepending) keeps ComfyUI's own top-level ``nodes`` module in front.
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

try:
    from .nodes import NODES
except ImportError:  # imported as a plain module, not as a package (no relative imports possible)
    if __package__:  # imported as a package (ComfyUI): a real failure that ComfyUI should report
        raise
    NODES = {}


async def comfy_entrypoint():
    """ComfyUI's V3 registration: the extension listing the pack's nodes."""
    try:
        from .nodes.comfy_v3 import LongVidExtension
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("comfy_api"):
            raise
        raise ImportError(f"LongVid needs ComfyUI's node API module comfy_api.v0_0_2 (ComfyUI 0.3.64 or newer); "
                          f"this ComfyUI lacks it ({e})") from e
    return LongVidExtension()


WEB_DIRECTORY = None
__all__ = ["NODES", "comfy_entrypoint"]
