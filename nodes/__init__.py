"""LongVid's ComfyUI nodes: a thin UI layer over ``longvid_core``.

Node ids carry the ``LongVid`` prefix and are never renamed once shipped.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
