"""The ``longvid`` command line's parser: its subcommands and flags, in groups the video
commands share. Standard library and :mod:`.cli_inputs`/:mod:`.modes` only, so ``--help`` and a bad
flag answer before torch loads."""

from __future__ import annotations

import argparse

from .cli_inputs import PROG, ArgumentParser, keyframe, number
from .modes import (AUTO, DEFAULT_SAMPLER, DEFAULT_SCHEDULER, GUIDE_METHODS, MAX_FRAMES,
                    MAX_SEED, MODES, SAMPLER_NAMES, SCHEDULER_NAMES)


def add_model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--svd", help="SVD checkpoint (SGM single file or diffusers folder); default: bundled small model")
    p.add_argument("--extension", help="ExVideo (DiffSynth) or LongVid extension file")
    p.add_argument("--lora", help="LongVid LoRA file (from training/train.py --mode lora), merged after --extension")
    p.add_argument("--lora-strength", type=number(float), default=1.0,
                   help="scale of --lora's update (0: the base as is)")


def add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="longvid.mp4", help="output video (.mp4, .m4v or .mov); written as "
                   "NAME.partial.mp4 and renamed when complete, so an interrupted run keeps what it finished there")
    p.add_argument("--save-frames", help="also write every frame as PNG into this folder")
    p.add_argument("--decode-window", type=number(int, 1), help="latent frames the temporal VAE decodes together "
                   "(memory); default: the model file's, else 14 (SVD's clip length)")
    p.add_argument("--decode-overlap", type=number(int, 0), help="frames shared and cross-faded by consecutive "
                   "decode windows (at most half the window); default: the model file's, else 4")


def add_sampling_flags(p: argparse.ArgumentParser, frames: bool = True) -> None:
    p.add_argument("--mode", choices=MODES, default=AUTO, help="auto: progressive as trained for weights LongVid's "
                   "trainer fine-tuned progressively, else the best training-free setting (printed)")
    p.add_argument("--sampler", dest="sampler_name", choices=SAMPLER_NAMES, default=DEFAULT_SAMPLER,
                   help="the step rule, by ComfyUI's names; in progressive mode each frame keeps its own history "
                   "and noise as the window moves")
    p.add_argument("--scheduler", choices=SCHEDULER_NAMES, default=DEFAULT_SCHEDULER, help="the sigma schedule, by "
                   "ComfyUI's names (align_your_steps: AYS's SVD list resampled to --steps); in progressive mode its "
                   "levels are the table's")
    p.add_argument("--partitions", type=number(int, 1), default=1, help="progressive: split each row's window into "
                   "this many calls, each spanning fewer noise levels (for weights trained with one level per clip)")
    p.add_argument("--lookahead", action="store_true", help="progressive: each partition also sees the one ahead")
    p.add_argument("--cache-interval", type=number(int, 0), default=0, help="reuse the UNet's deep features on up to "
                   "this many calls after each full call on the same frames (DeepCache; 0: off)")
    p.add_argument("--context-overlap", type=number(int, 0), help="context_windows: frames shared by windows of "
                   "window + chunk frames (default: a quarter of a window)")
    numbers = (("window", number(int, 1)), ("chunk", number(int, 1)), ("steps", number(int, 1)),
               ("cfg", number(float, 0)), ("min-cfg", number(float, 0)), ("width", number(int, 1)),
               ("height", number(int, 1)), ("fps", number(int, 1)), ("motion-bucket-id", number(int, 0, 1023)),
               ("noise-aug-strength", number(float, 0)), ("output-fps", number(int, 1, 1000)))
    for name, kind in ((("frames", number(int, 1, MAX_FRAMES)),) if frames else ()) + numbers:
        p.add_argument(f"--{name}", type=kind, default=None, help="default: the model's recommended value")
    p.add_argument("--context-sigma", type=number(float, 0), help="progressive: give the finished chunk in front to "
                   "the model noised at this sigma (for models trained with --progressive-context-sigma); default: "
                   "the model file's, else clean")
    p.add_argument("--seed", type=number(int, 0, MAX_SEED), default=0)
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), help="default: fp16 on GPU, fp32 on CPU")
    p.add_argument("--threads", type=number(int, 0, 4096), default=0, help="CPU threads for torch (0: torch's "
                   "default)")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile the UNet (default backend inductor); runs uncompiled, with a warning, "
                   "where compiling fails")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# what generate has and the video-in commands do not: their first frame and guides come from the input
NOT_FROM_AN_INPUT_VIDEO = dict(image=None, prompt=None, negative_prompt="", t2i_model=None, t2i_steps=25,
                               save_first_frame=None, keyframe=None, last_frame=None, loop=False, frames=None,
                               guide_method=AUTO)


def add_guide_method_flag(p) -> None:
    p.add_argument("--guide-method", choices=GUIDE_METHODS, default=AUTO,
                   help="how a keyframe steers the frames around it: hold (the model sees it noised to each "
                   "step's level), clean (the model sees it clean, as a context frame), time_reversal (held, and "
                   "in full_sequence and replacement modes the frames before it are also denoised backward from "
                   "its picture: one more call per step in its window); auto: clean, but hold in "
                   "context_windows (measured in bench/bench_guides.py)")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="LongVid: long videos with SVD / ExVideo-SVD "
                            "and progressive rolling sampling.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    formatter = argparse.ArgumentDefaultsHelpFormatter
    g = sub.add_parser("generate", help="make a video (with no weights given: the bundled small model)",
                       formatter_class=formatter)
    add_model_flags(g)
    g.add_argument("--image", help="first frame image file")
    g.add_argument("--prompt", help="make the first frame with --t2i-model from this prompt")
    g.add_argument("--negative-prompt", default="", help="negative prompt for --t2i-model")
    g.add_argument("--t2i-model", help="local diffusers text-to-image folder (with model_index.json; loaded with "
                   "AutoPipelineForText2Image, no downloads) for --prompt, at --width x --height, seeded by --seed")
    g.add_argument("--t2i-steps", type=number(int, 1, 1000), default=25,
                   help="denoising steps of --t2i-model (--steps is the video's)")
    add_output_flags(g)
    g.add_argument("--save-first-frame", help="write the conditioning frame as PNG")
    g.add_argument("--keyframe", action="append", type=keyframe, metavar="PICTURE@FRAME[:STRENGTH]",
                   help="the video passes through PICTURE at frame FRAME (strength 1, the default) or is pulled "
                   "toward it (strength below 1); repeatable")
    g.add_argument("--last-frame", metavar="PICTURE", help="the video ends on PICTURE (a keyframe at the last frame)")
    g.add_argument("--loop", action="store_true", help="the video loops: its last frame leads into its first "
                   "without a seam (at least window + chunk frames)")
    add_guide_method_flag(g)
    add_sampling_flags(g)
    i = sub.add_parser("interpolate", help="more frames per second: every FACTOR-th output frame is a frame of "
                       "the input video, the model makes the ones between", formatter_class=formatter)
    i.add_argument("input", metavar="IN", help="the input video")
    i.add_argument("--factor", type=number(int, 2, 16), required=True, help="output frames per input frame (2: "
                   "one new frame between each two); the output rate is the input's times FACTOR")
    add_guide_method_flag(i)
    add_model_flags(i)
    add_output_flags(i)
    add_sampling_flags(i, frames=False)
    i.set_defaults(**{k: v for k, v in NOT_FROM_AN_INPUT_VIDEO.items() if k != "guide_method"})
    r = sub.add_parser("refine", help="every frame of the input video pulled toward itself by the model: less "
                       "flicker, sharper; at a larger --width/--height a hires pass", formatter_class=formatter)
    r.add_argument("input", metavar="IN", help="the input video")
    r.add_argument("--strength", type=number(float, 0, 1), required=True, help="how close each frame stays to the "
                   "input (1: unchanged, 0: made anew); each frame is held for the first round(STRENGTH x steps) "
                   "steps")
    add_model_flags(r)
    add_output_flags(r)
    add_sampling_flags(r, frames=False)
    r.set_defaults(**NOT_FROM_AN_INPUT_VIDEO)
    s = sub.add_parser("smoke", help="end-to-end run of the model code with a tiny random SVD")
    s.add_argument("--frames", type=number(int, 1, 4096), default=12)
    s.add_argument("--window", type=number(int, 1, 256), default=4)
    s.add_argument("--chunk", type=number(int, 1, 256), default=2)
    s.add_argument("--steps", type=number(int, 1, 1000), default=4)
    s.add_argument("--size", type=number(int, 8, 512), default=16)
    return parser


__all__ = ["add_model_flags", "add_output_flags", "add_sampling_flags", "build_parser"]
