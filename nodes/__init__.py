"""LongVid's ComfyUI nodes: a thin UI layer over ``longvid_core`` (V1 node API).

Node ids carry the ``LongVid`` prefix and are never renamed once shipped: saved workflows refer to
them. A node that must change gets a new id; the old one stays as a deprecated alias.
Data flows one way: Load -> Condition -> Sample -> Decode / Save Video (or Sample to Video).
"""

from . import runtime
from .conditioning import LongVidCondition, LongVidEncodeFrames
from .loader import LongVidLoadModel
from .sampling import LongVidSample
from .schedule_view import LongVidScheduleView
from .video import LongVidDecode, LongVidSampleToVideo, LongVidSaveVideo

runtime.register_model_folders()

NODE_CLASS_MAPPINGS = {
    "LongVidLoadModel": LongVidLoadModel,
    "LongVidCondition": LongVidCondition,
    "LongVidEncodeFrames": LongVidEncodeFrames,
    "LongVidSample": LongVidSample,
    "LongVidDecode": LongVidDecode,
    "LongVidSaveVideo": LongVidSaveVideo,
    "LongVidSampleToVideo": LongVidSampleToVideo,
    "LongVidScheduleView": LongVidScheduleView,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "LongVidLoadModel": "LongVid Load SVD (+ ExVideo)",
    "LongVidCondition": "LongVid Condition (image / keyframes)",
    "LongVidEncodeFrames": "LongVid Encode Frames (video to extend)",
    "LongVidSample": "LongVid Sample",
    "LongVidDecode": "LongVid Decode (overlapping windows)",
    "LongVidSaveVideo": "LongVid Save Video (mp4, streamed)",
    "LongVidSampleToVideo": "LongVid Sample to Video (streamed)",
    "LongVidScheduleView": "LongVid Schedule View",
}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
