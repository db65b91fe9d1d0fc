"""LongVidGuides (pictures + frame indices + strength -> LONGVID_GUIDES): frames the video passes
through, chainable so that a storyboard is built node by node; the sampling nodes encode them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from longvid_core.problems import Problem

from longvid_core.run.modes import AUTO, GUIDE_METHODS

from .spec import Boolean, Combo, Float, Int, NodeSpec, Output, Socket, String
from .validation import check_widgets, first_problem, frame_list, raise_if

GUIDES_TYPE = "LONGVID_GUIDES"
GUIDES_INPUT = Socket("guides", GUIDES_TYPE, optional=True, tooltip=(
    "Frames the video passes through (LongVid Guides): at strength 1 the video's frame is the picture; below 1 it "
    "is pulled toward it. Counted in the whole output video, a prefix included; pictures are fitted like the "
    "conditioning image."))


@dataclass(frozen=True)
class PictureGuide:
    """A picture ``[1, H, W, 3]`` (0..1) at a frame with a strength, not yet encoded (the sampler
    knows the video's size and holds the model)."""

    frame: int
    picture: torch.Tensor
    strength: float
    loops: bool = False  # the picture the video loops back to: held at frame 0 and after the last frame
    method: str = "hold"  # how it steers the frames around it (longvid_core.sampling.guides)


def parse_guide_frames(text: str) -> list[int]:
    """``"0, 48, 96"`` -> ``[0, 48, 96]``: whole frame numbers >= 0, no two alike. Raises ValueError
    holding the :class:`Problem` (what to write)."""
    parts = frame_list(text)
    expected = "one whole frame index >= 0 per picture, no two alike, like '0, 48, 96'"
    try:
        frames = [int(p) for p in parts]
    except ValueError:
        raise ValueError(Problem("frames", expected, repr(text))) from None
    if not frames or min(frames) < 0:
        raise ValueError(Problem("frames", expected, repr(text), "frame indices >= 0"))
    if len(set(frames)) != len(frames):
        raise ValueError(Problem("frames", expected, f"{text!r}, a frame twice"))
    return frames


def frames_problem(text) -> str | None:
    if text is None:
        return None
    try:
        parse_guide_frames(text)
    except ValueError as e:
        return e.args[0]
    return None


class LongVidGuides:
    SPEC = NodeSpec(
        node_id="LongVidGuides",
        display_name="LongVid Guides (keyframes anywhere)",
        description=(
            "Pictures the video passes through: picture i of the batch at the i-th frame of frames. At strength 1 "
            "the video's frame is exactly the picture (as the VAE encodes it): first and last frame, a storyboard of "
            "keyframes; below 1 the frame starts from the picture noised part of the way and is denoised from there. "
            "Chain several to give each picture its own strength; connect the last to LongVid Sample's guides."),
        function="guides",
        report_under="frames",
        inputs=(
            Socket("images", "IMAGE", "The pictures, one per frame index (a batch: in order)."),
            String("frames", "0", tooltip="Frame index of each picture, e.g. '0, 48, 95'. One number per picture."),
            Float("strength", 1.0, 0.0, 1.0, step=0.05, round=0.01, tooltip=(
                "1: the video passes through the pictures. Below 1: their frames are held for that share of the "
                "steps, then denoised freely. 0: no effect.")),
            Socket("previous", GUIDES_TYPE, optional=True, tooltip=(
                "Guides from an earlier LongVid Guides node to add these to (a chain: one strength per node).")),
            Boolean("loop", False, optional=True, tooltip=(
                "The video loops back to the picture at frame 0: it is also held one frame past the end (sampled, not "
                "kept), so the last frame leads into the first without a seam.")),
            Combo("method", list(GUIDE_METHODS), AUTO, optional=True, tooltip=(
                "How a strength-1 picture steers the frames around it. hold: the model sees its frame noised to "
                "each step's level. clean: the model sees the picture clean, as a context frame, from the moment it "
                "enters the window. time_reversal: held, and in full_sequence and replacement modes the frames "
                "before it are also denoised backward from the picture, the two predictions fused (one more call "
                "per step in its window). auto: clean, but hold in context_windows (measured).")),
        ),
        outputs=(Output("guides", GUIDES_TYPE, "The previous guides and these: for LongVid Sample's guides."),),
    )

    @classmethod
    def validate_inputs(cls, frames=None, strength=None, method=None):
        return first_problem(check_widgets(cls, strength=strength, method=method), frames_problem(frames))

    def guides(self, images, frames, strength, previous=None, loop=False, method=AUTO):
        raise_if(self.validate_inputs(frames, strength, method))
        indices = parse_guide_frames(frames)
        if len(indices) != images.shape[0]:
            raise ValueError(Problem("frames", f"one frame index per picture of the batch ({images.shape[0]})",
                                     f"{len(indices)} in {frames!r}"))
        if loop and 0 not in indices:
            raise ValueError(Problem("loop", "a picture at frame 0 (the one the video loops back to)",
                                     f"frames {frames!r}"))
        return (chained(previous, [PictureGuide(frame, images[i:i + 1], float(strength), loop and frame == 0, method)
                                   for i, frame in enumerate(indices)]),)


def chained(previous, new: list[PictureGuide]) -> tuple:
    """``previous`` guides and ``new`` ones, no frame twice (so at most one loop: a loop is at frame 0)."""
    earlier = list(previous or ())
    taken = {g.frame for g in earlier} & {g.frame for g in new}
    if taken:
        raise ValueError(Problem("frames", "frames the previous guides leave free", f"{sorted(taken)} taken twice"))
    return tuple(earlier + new)


class LongVidVideoGuides:
    SPEC = NodeSpec(
        node_id="LongVidVideoGuides",
        display_name="LongVid Video Guides (interpolate / refine)",
        description=(
            "The frames of an input video as guides, LaVie's later stages in SVD terms. factor 2 or more: every "
            "factor-th output frame is an input frame (strength 1 keeps them exactly) and the model makes the ones "
            "between: more frames per second. factor 1 with strength below 1: every frame is pulled toward its input "
            "(refine: less flicker, sharper; at a larger video size a hires pass). Connect guides and frames to the "
            "sampler, first_frame to LongVid Condition, and set the sampler's fps to the output rate."),
        function="video_guides",
        report_under="factor",
        inputs=(
            Socket("images", "IMAGE", "The input video's frames (a batch, in order), at least 2."),
            Int("factor", 2, 1, 16, tooltip=(
                "Output frames per input frame: 2 puts one new frame between each two (interpolation x2); 1 guides "
                "every frame (refine).")),
            Float("strength", 1.0, 0.0, 1.0, step=0.05, round=0.01, tooltip=(
                "1: the input frames are kept exactly (interpolation). Below 1: each frame is held for that share of "
                "the steps, then denoised with its neighbours (refine).")),
            Socket("previous", GUIDES_TYPE, optional=True, tooltip="Guides to add these to."),
        ),
        outputs=(Output("guides", GUIDES_TYPE, "For LongVid Sample's guides."),
                 Output("frames", "INT", "The output's frames, (input frames - 1) x factor + 1: the sampler's frames."),
                 Output("first_frame", "IMAGE", "The input's first frame: the image to condition on.")),
    )

    @classmethod
    def validate_inputs(cls, factor=None, strength=None):
        return first_problem(check_widgets(cls, factor=factor, strength=strength))

    def video_guides(self, images, factor, strength, previous=None):
        from longvid_core.run.cascade import cascade_problem, interpolated_frames

        raise_if(self.validate_inputs(factor, strength))
        raise_if(cascade_problem(images.shape[0], factor if factor > 1 else None, strength))
        new = [PictureGuide(i * factor, images[i:i + 1], float(strength)) for i in range(images.shape[0])]
        return chained(previous, new), interpolated_frames(images.shape[0], factor), images[:1]


def encoded_guides(svd, picture_guides, frame_shape, run_cond=None) -> tuple[list, torch.Tensor | None, list[str]]:
    """The sampler's guides from LongVid Guides' pictures, fitted to the video's size and encoded
    with ``svd``'s VAE (on its device); the loop's latent (or None: no loop), and the notes of what
    was cropped. Guides that may run Time Reversal Fusion get their picture's cond made like ``run_cond``."""
    from longvid_core import pipeline
    from longvid_core.networks.vae import vae_downscale

    if not picture_guides:
        return [], None, []
    scale = vae_downscale(svd.vae)
    height, width = frame_shape[-2] * scale, frame_shape[-1] * scale
    by_size = {}  # one VAE batch per picture size (a video's frames: one batch) and method
    for g in picture_guides:
        by_size.setdefault((tuple(g.picture.shape[1:3]), g.method), []).append(g)
    guides, loop_latent, notes = [], None, []
    for (_, method), group in by_size.items():
        made, said = pipeline.guides_from_images(svd, torch.cat([g.picture for g in group]), [g.frame for g in group],
                                                 [g.strength for g in group], width, height, method=method,
                                                 anchors_like=run_cond)
        notes += said
        for g, guide in zip(group, made):
            if g.loops:  # the pipeline holds frame 0 and the closing frame to it
                loop_latent = guide.latent
            else:
                guides.append(guide)
    return guides, loop_latent, notes


__all__ = ["GUIDES_INPUT", "GUIDES_TYPE", "LongVidGuides", "LongVidVideoGuides", "PictureGuide", "chained",
           "encoded_guides", "parse_guide_frames"]
