"""LongVid's ComfyUI nodes: a thin UI layer over ``longvid_core``, on ComfyUI's V3 node API.

Each node is a plain class (no ComfyUI import) holding its logic and ``SPEC``, a declaration of its
inputs and outputs (:mod:`nodes.spec`). Inside ComfyUI, :mod:`nodes.comfy_v3` builds a V3
``io.ComfyNode`` from each (``comfy_api.v0_0_2``, a pinned API version) and the pack registers them
through ``comfy_entrypoint``; tests and scripts use the plain classes directly.

Node ids carry the ``LongVid`` prefix and are never renamed once shipped, nor are input names or
their order: saved workflows refer to them. A node that must change gets a new id; the old one
stays as a deprecated alias. New inputs go last.
Data flows one way: Load -> Condition -> Sample -> Decode / Save Video (or Sample to Video); Settings feeds
the sampler and the Schedule View one schedule; Guides give the sampler frames to pass through.
"""

from . import runtime
from .conditioning import LongVidCondition, LongVidEncodeFrames
from .guides import LongVidGuides, LongVidVideoGuides
from .loader import LongVidLoadModel
from .sampling import LongVidSample
from .schedule_view import LongVidScheduleView
from .settings import LongVidSettings
from .video import LongVidDecode, LongVidSampleToVideo, LongVidSaveVideo

runtime.register_model_folders()
runtime.install_example_inputs()

# node id -> the node's ComfyUI-free class (its SPEC, validate_inputs, and the method SPEC.function)
NODES = {cls.SPEC.node_id: cls for cls in (
    LongVidLoadModel,
    LongVidCondition,
    LongVidEncodeFrames,
    LongVidSample,
    LongVidDecode,
    LongVidSaveVideo,
    LongVidSampleToVideo,
    LongVidScheduleView,
    LongVidSettings,
    LongVidGuides,
    LongVidVideoGuides,
)}

__all__ = ["NODES"]
