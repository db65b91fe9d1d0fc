"""LongVidCondition (image(s) -> conditioning) and LongVidEncodeFrames (video frames -> prefix)."""

from __future__ import annotations

import torch

from longvid_core import pipeline
from longvid_core.run.frames import cover_crop, encode_frames
from longvid_core.run.pipeline import SVD_SIZE_MULTIPLE

from . import runtime
from .spec import Float, Int, NodeSpec, Output, Socket, String
from .validation import check_keyframe_starts, check_widgets, first_problem, parse_keyframe_starts, raise_if

SIZE_TOOLTIP = ("Video {} in pixels, a multiple of 64. Images are scaled to cover it and centre-cropped "
                "(nothing is stretched or padded).")
MODEL_TOOLTIP = "The model from LongVid Load SVD."


def size_inputs() -> tuple:
    return (
        Int("width", 1024, SVD_SIZE_MULTIPLE, 4096, step=SVD_SIZE_MULTIPLE, tooltip=SIZE_TOOLTIP.format("width")),
        Int("height", 576, SVD_SIZE_MULTIPLE, 4096, step=SVD_SIZE_MULTIPLE, tooltip=SIZE_TOOLTIP.format("height")),
    )


class LongVidCondition:
    SPEC = NodeSpec(
        node_id="LongVidCondition",
        display_name="LongVid Condition (image / keyframes)",
        description=(
            "SVD conditioning from one image, or from a batch of images used as keyframes: image i takes over at the "
            "frame given by the i-th number of keyframe_starts (frames counted in the whole output video, a prefix "
            "included). Images are scaled to cover width x height and centre-cropped."),
        function="condition",
        report_under="keyframe_starts",
        inputs=(
            Socket("model", "LONGVID_MODEL", MODEL_TOOLTIP),
            Socket("image", "IMAGE", "One start image, or a batch of keyframe images (ImageBatch)."),
            *size_inputs(),
            String("keyframe_starts", "0", tooltip=(
                "Frame where each image of the batch takes over, e.g. '0, 48, 96' for 3 images. Starts at 0, "
                "increasing, one number per image.")),
            Int("fps", 6, 1, 1000, tooltip="SVD's frame-rate conditioning (fps - 1 is what the model sees)."),
            Int("motion_bucket_id", 127, 0, 1023, tooltip="More motion with higher values (SVD default 127)."),
            Float("augmentation", 0.02, 0.0, 10.0, step=0.01,
                  tooltip="Noise added to the conditioning image (SVD's noise_aug_strength)."),
        ),
        outputs=(Output("cond", "LONGVID_COND", "Conditioning for LongVid Sample."),
                 Output("images", "IMAGE", "The images as fitted to the video size.")),
    )

    @classmethod
    def validate_inputs(cls, width=None, height=None, keyframe_starts=None, fps=None, motion_bucket_id=None,
                        augmentation=None):
        return first_problem(
            check_widgets(cls, width=width, height=height, fps=fps, motion_bucket_id=motion_bucket_id,
                          augmentation=augmentation),
            pipeline.size_problem(width, height),
            check_keyframe_starts(keyframe_starts),
        )

    def condition(self, model, image, width, height, keyframe_starts, fps, motion_bucket_id, augmentation):
        raise_if(self.validate_inputs(width, height, keyframe_starts, fps, motion_bucket_id, augmentation))
        starts = parse_keyframe_starts(keyframe_starts)
        keyframes, fitted = pipeline.condition_images(
            model.prepare("vae", "image_encoder"), image, width, height, starts, fps=fps,
            motion_bucket_id=motion_bucket_id, noise_aug_strength=augmentation,
            callback=lambda _: runtime.throw_if_interrupted())
        return ([(start, cond.to("cpu")) for start, cond in keyframes], fitted)


class LongVidEncodeFrames:
    SPEC = NodeSpec(
        node_id="LongVidEncodeFrames",
        display_name="LongVid Encode Frames (video to extend)",
        description=(
            "Encodes video frames (e.g. Load Video -> Get Video Components) to a LATENT for LongVid Sample's prefix, "
            "to extend that video. Frames are fitted to width x height like LongVid Condition does. Also returns the "
            "last frame, a natural conditioning image for the continuation."),
        function="encode",
        report_under="width",
        inputs=(
            Socket("model", "LONGVID_MODEL", MODEL_TOOLTIP),
            Socket("images", "IMAGE", "The frames of the video to extend, first to last (IMAGE batch)."),
            *size_inputs(),
        ),
        outputs=(Output("prefix", "LATENT", "Latent frames (ComfyUI layout [frames, 4, h, w]) for LongVid Sample's "
                                            "prefix."),
                 Output("last_frame", "IMAGE", "The last frame, fitted to the video size.")),
    )

    @classmethod
    def validate_inputs(cls, width=None, height=None):
        return first_problem(check_widgets(cls, width=width, height=height), pipeline.size_problem(width, height))

    def encode(self, model, images, width, height):
        raise_if(self.validate_inputs(width, height))
        pipeline.check_size(model.svd, width, height)
        fitted = cover_crop(images, width, height)
        svd = model.prepare("vae")
        latents = []
        with torch.no_grad():
            for start in range(0, fitted.shape[0], 16):  # check cancel between batches of frames
                runtime.throw_if_interrupted()
                latents.append(encode_frames(svd.vae, fitted[start:start + 16]).cpu())
        return (pipeline.latents_to_comfy(torch.cat(latents, dim=1)), fitted[-1:])
