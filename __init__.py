"""LongVid — a ComfyUI node pack for long videos (ExVideo-SVD, PA-VDM progressive sampling).

ComfyUI imports this file as the pack's module and reads ``NODE_CLASS_MAPPINGS``. Outside ComfyUI
(plain ``import``, pytest, pip) it imports cleanly: the node layer only touches ComfyUI's runtime
(``comfy``, ``folder_paths``) behind guarded imports.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
# The node layer imports ``longvid_core`` by absolute name; ComfyUI does not put pack folders on
# sys.path. Appending (not prepending) keeps ComfyUI's own top-level ``nodes`` module in front.
if _PACK_DIR not in sys.path:
    sys.path.append(_PACK_DIR)

try:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ImportError:  # imported as a plain module, not as a package (no relative imports possible)
    if __package__:  # imported as a package (ComfyUI): a real failure that ComfyUI should report
        raise
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
