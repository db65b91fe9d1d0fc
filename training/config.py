"""The trainer's settings: one dataclass, filled from defaults < a config file < the command line.

Every field is a command-line flag (``learning_rate`` -> ``--learning-rate``; booleans also take
``--no-...``) and a key of the optional config file (``--config run.toml`` or ``run.json``; keys
with ``_`` or ``-``). Unknown keys are refused with the list of valid ones.
"""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from training.optimizers import OPTIMIZERS, require_bitsandbytes
from training.user_errors import UserError

MODES = ("exvideo", "progressive", "full", "lora")
PRECISIONS = ("fp32", "bf16", "fp16")
# diffusers.optimization's schedule names the trainer offers (training/lr_schedule.py; named here
# so that --help needs no diffusers import)
LR_SCHEDULERS = ("constant_with_warmup", "constant", "linear", "cosine", "cosine_with_restarts", "polynomial")


def _f(default, help: str, group: str, choices=None, **kw):
    return field(default=default, metadata={"help": help, "group": group, "choices": choices, **kw})


@dataclass
class TrainConfig:
    # -- model and output
    base: str = _f("", "base SVD checkpoint: SGM single file (svd_xt.safetensors) or diffusers folder", "model")
    output_dir: str = _f("", "where checkpoints, logs and the skipped-video report go", "model")
    mode: str = _f("exvideo", "comma list of modes: exvideo (extend to --exvideo-frames and train the 16 temporal "
                   "transformer blocks), full (train every UNet parameter; small models), lora (train LoRA layers; "
                   "alone, beside a frozen --extension, or with exvideo), progressive (PA-VDM progressive noise "
                   "levels; combine with exvideo, full or lora)", "model")
    exvideo_frames: int = _f(128, "exvideo: length N of the frame-position table the UNet is extended to", "model")
    extension: str = _f("", "start from this ExVideo extension file (DiffSynth or LongVid layout) instead of a fresh "
                        "extension", "model")
    attention: str = _f("sdpa", "attention backend", "model", choices=("sdpa", "xformers"))
    # -- LoRA (--mode lora; longvid_core/weights/lora.py)
    lora_rank: int = _f(16, "lora: rank of each LoRA layer", "lora")
    lora_alpha: float = _f(0.0, "lora: alpha (the update is scaled by alpha / rank); 0: the rank", "lora")
    lora_targets: str = _f("to_q,to_k,to_v,to_out.0", "lora: comma list of the UNet's linear layers to adapt, by "
                           "name or its last parts, * a wildcard (default: the attention projections of every "
                           "spatial and temporal transformer block; with exvideo, layers the extension trains whole "
                           "are left out)", "lora")
    # -- data
    data_dir: str = _f("", "folder of training videos (.mp4/.webm/.mov)", "data")
    metadata: str = _f("", "JSON or CSV metadata (path, fps, caption); default: data_dir/metadata.json|csv if present",
                       "data")
    frames: int = _f(0, "frames per clip (0: --exvideo-frames for exvideo, 14 for full; progressive: chunk + window)",
                     "data")
    frame_stride: int = _f(1, "take every n-th source frame", "data")
    height: int = _f(512, "clip height in pixels (multiple of 64 for SVD)", "data")
    width: int = _f(512, "clip width in pixels (multiple of 64 for SVD)", "data")
    clips_per_video: int = _f(1, "clips per video per epoch (random starts; with --cache-dir, evenly spaced fixed "
                              "starts)", "data")
    cache_dir: str = _f("", "cache VAE latents and CLIP embeddings of each clip here (clip starts become fixed)",
                        "data")
    num_workers: int = _f(2, "data-loader worker processes (video decoding)", "data")
    condition_frame: str = _f("clip", "the picture a clip is conditioned on: the clip's own first frame (SVD, "
                              "ExVideo) or its video's first frame, however far back (what a long rolling sample "
                              "conditions every window on)", "data", choices=("clip", "video"))
    fps: int = _f(-1, "fps conditioning (SVD added time id fps-1); -1: the clip's own rate / stride", "data")
    motion_bucket_id: int = _f(-1, "motion bucket conditioning; -1: from the clip's temporal pixel std (ExVideo)",
                               "data")
    noise_aug_strength: float = _f(0.0, "noise added to the conditioning frame before VAE encoding (SVD; ExVideo "
                                   "trains with 0)", "data")
    image_dir: str = _f("", "folder of still images for joint image-video batches (default: first frames of the "
                        "videos)", "data")
    conditioning_dropout: float = _f(0.0, "fraction of clips trained unconditionally: image embedding and concat "
                                     "latent zeroed as in the sampler's unconditional branch, so that --cfg > 1 "
                                     "has a trained branch to guide away from (0: never)", "data")
    image_batch_fraction: float = _f(0.0, "fraction of batches that are still images (LaVie Sec. 3.1 joint "
                                     "training): F copies of one image, motion bucket from its (zero) motion",
                                     "data")
    # -- noise and loss
    sigma_sampling: str = _f("lognormal", "sigma per video: EDM log-normal or ExVideo's 1000-step Karras grid",
                             "loss", choices=("lognormal", "karras1000"))
    p_mean: float = _f(0.7, "log-normal sigma: mean of ln(sigma)", "loss")
    p_std: float = _f(1.6, "log-normal sigma: std of ln(sigma)", "loss")
    sigma_min: float = _f(0.002, "smallest sigma of the Karras schedules (SVD's)", "loss")
    sigma_max: float = _f(700.0, "largest sigma of the Karras schedules (SVD's)", "loss")
    loss_weighting: str = _f("edm", "edm: (s^2+1)/s^2 on the x0 error (SVD/EDM); exvideo: sqrt(1+s^2)/s", "loss",
                             choices=("edm", "exvideo", "unit"))
    guide_frame_fraction: float = _f(0.0, "fraction of video clips with clean frames at random positions (1 or 2 "
                                     "noisy frames given clean at the smallest sigma and left out of the loss; "
                                     "Diffusion Forcing's independent per-frame levels): teaches the model the "
                                     "clean guide frames LongVid's keyframes, loops and interpolation show it "
                                     "(0: never)", "loss")
    progressive_window: int = _f(24, "progressive: noisy latent frames F in the window (the sampler's window)",
                                 "progressive")
    progressive_chunk: int = _f(2, "progressive: frames per chunk C (the sampler's chunk)", "progressive")
    progressive_steps: int = _f(24, "progressive: sampler steps S the levels index (multiple of F/C)", "progressive")
    progressive_shift: float = _f(0.4, "progressive: delta = shift * eps levels (PA-VDM's 0.4; 0 disables)",
                                  "progressive")
    variable_length_fraction: float = _f(0.5, "progressive: fraction of batches from initialization/termination "
                                         "rows (growing/draining windows)", "progressive")
    clean_start_fraction: float = _f(0.0, "progressive: fraction of batches from the table with a clean chunk from "
                                     "the first call (extending a given video)", "progressive")
    progressive_context_sigma: float = _f(0.0, "progressive: noise the clean chunk at a sigma drawn log-uniformly "
                                          "up to this (0: clean, as PA-VDM); sample with the same "
                                          "--context-sigma", "progressive")
    progressive_rollout_fraction: float = _f(0.0, "progressive: fraction of batches that first run the sampler "
                                             "over the window from noised true frames, then take the loss "
                                             "against the true frames (training/rollout.py)", "progressive")
    progressive_rollout_periods: int = _f(2, "progressive rollouts: run the sampler for 1 to this many periods "
                                          "(drawn uniformly; each finishes one chunk) before the loss",
                                          "progressive")
    # -- optimisation
    max_steps: int = _f(1000, "optimizer steps to train (a resumed run counts from its checkpoint)", "optim")
    batch_size: int = _f(1, "videos per process per micro-batch", "optim")
    grad_accum: int = _f(1, "micro-batches per optimizer step", "optim")
    optimizer: str = _f("adamw", "adamw: float32 Adam states (8 bytes per trained weight); adamw8bit: "
                        "bitsandbytes' 8-bit states (about 2 bytes; needs bitsandbytes)", "optim",
                        choices=OPTIMIZERS)
    learning_rate: float = _f(1e-5, "AdamW learning rate (ExVideo: 1e-5)", "optim")
    lr_warmup_steps: int = _f(0, "linear learning-rate warm-up steps", "optim")
    lr_scheduler: str = _f("constant_with_warmup", "learning-rate schedule after the warm-up (diffusers' "
                           "get_scheduler; linear, cosine, ... decay over --max-steps)", "optim",
                           choices=LR_SCHEDULERS)
    weight_decay: float = _f(1e-2, "AdamW weight decay", "optim")
    adam_beta1: float = _f(0.9, "AdamW beta1", "optim")
    adam_beta2: float = _f(0.999, "AdamW beta2", "optim")
    adam_eps: float = _f(1e-8, "AdamW epsilon", "optim")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 disables)", "optim")
    ema_decay: float = _f(0.999, "EMA decay of the trainable weights (0 disables)", "optim")
    seed: int = _f(0, "run seed (data order, clip starts, sigmas, noise)", "optim")
    # -- memory and devices
    precision: str = _f("bf16", "frozen weights and autocast dtype; trainable weights keep fp32 master copies",
                        "memory", choices=PRECISIONS)
    vae_fp32: bool = _f(True, "run the VAE encoder in fp32 (training targets) whatever --precision", "memory")
    gradient_checkpointing: bool = _f(True, "recompute each block's activations in the backward pass", "memory")
    vae_batch: int = _f(8, "frames the VAE encodes at once", "memory")
    cpu: bool = _f(False, "train on the CPU even if a GPU is present (smoke tests)", "memory")
    estimate_memory: bool = _f(False, "print the predicted peak GPU memory of these settings (from the measurement "
                               "in training/memory_coefficients.json) and exit without training", "memory")
    # -- checkpoints and logging
    save_every: int = _f(500, "save a checkpoint every n optimizer steps (and at the end)", "checkpoints")
    keep_last: int = _f(3, "keep the newest n checkpoints (0: all)", "checkpoints")
    save_diffsynth: bool = _f(False, "exvideo: also write the extension in DiffSynth-Studio's layout", "checkpoints")
    resume: str = _f("", "'latest' (newest checkpoint in output_dir, if any) or a checkpoint folder", "checkpoints")
    allow_changed_settings: bool = _f(False, "resume even though settings differ from the checkpoint's (learning "
                                      "rate, frames, data, ...); mode, --exvideo-frames and the progressive "
                                      "window/chunk can never change", "checkpoints")
    log_every: int = _f(10, "log every n optimizer steps", "checkpoints")
    eval_every: int = _f(0, "loss on a fixed held-out batch (fixed sigmas and noise) every n steps (0: never)",
                         "checkpoints")
    tensorboard: bool = _f(False, "also log to TensorBoard through accelerate's tracker (needs the tensorboard "
                           "package; events in output_dir/tensorboard)", "checkpoints")
    progress_bar: bool = _f(True, "show a progress bar with ETA and loss (main process, when stderr is a terminal)",
                            "checkpoints")
    weight_hash: bool = _f(False, "write each process's hash of the trained weights into every checkpoint "
                           "(checks that processes agree)", "checkpoints")

    # ---------------------------------------------------------------------------------------
    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(m.strip() for m in self.mode.split(",") if m.strip())

    @property
    def progressive(self) -> bool:
        return "progressive" in self.modes

    @property
    def lora(self) -> bool:
        return "lora" in self.modes

    @property
    def parameter_set(self) -> str:
        """The weights trained besides LoRA layers: full, exvideo, or lora (LoRA layers only)."""
        if "full" in self.modes:
            return "full"
        return "lora" if self.lora and "exvideo" not in self.modes else "exvideo"

    @property
    def lora_scale_alpha(self) -> float:
        return self.lora_alpha or float(self.lora_rank)

    def clip_frames(self) -> int:
        if self.progressive:
            return self.progressive_chunk + self.progressive_window
        if self.frames > 0:
            return self.frames
        return self.exvideo_frames if self.parameter_set == "exvideo" else 14

    def trained_for(self):
        """What this run trains the model for (recorded in every file it writes)."""
        from longvid_core.weights.trained_for import TrainedFor

        guides = float(self.guide_frame_fraction)
        if not self.progressive:
            return TrainedFor(progressive=False, clip_frames=self.clip_frames(), guide_frames=guides)
        return TrainedFor(progressive=True, clip_frames=self.clip_frames(), window=self.progressive_window,
                          chunk=self.progressive_chunk, steps=self.progressive_steps,
                          context_sigma=float(self.progressive_context_sigma), guide_frames=guides)

    def check(self) -> None:
        """Raise ValueError naming the setting to change."""
        unknown = [m for m in self.modes if m not in MODES]
        if unknown or not self.modes:
            raise ValueError(f"--mode: expected a comma list of {', '.join(MODES)}; found {self.mode!r}")
        if "exvideo" in self.modes and "full" in self.modes:
            raise ValueError("--mode: exvideo and full are two different sets of trained weights; choose one "
                             "(add progressive to either)")
        if self.modes == ("progressive",):
            raise ValueError("--mode progressive changes the noise levels, not what is trained; use "
                             "'exvideo,progressive', 'lora,progressive' or 'full,progressive'")
        if self.lora and "full" in self.modes:
            raise ValueError("--mode: full trains every UNet weight, so LoRA layers on top add nothing; choose one")
        if self.lora and (self.lora_rank < 1 or self.lora_alpha < 0):
            raise ValueError(f"--lora-rank must be >= 1 and --lora-alpha >= 0 (0: the rank); found "
                             f"{self.lora_rank}, {self.lora_alpha}")
        if self.lora and not any(t.strip() for t in self.lora_targets.split(",")):
            raise ValueError(f"--lora-targets: expected a comma list of layer names (e.g. to_q,to_k,to_v,to_out.0); "
                             f"found {self.lora_targets!r}")
        for name in ("base", "output_dir", "data_dir"):
            if not getattr(self, name) and not self.estimate_memory:  # an estimate reads no files
                raise ValueError(f"--{name.replace('_', '-')} is required")
        if self.progressive and self.frames and self.frames != self.clip_frames():
            raise ValueError(f"--frames {self.frames}: progressive clips are chunk + window = "
                             f"{self.clip_frames()} frames; leave --frames at 0")
        if self.parameter_set == "exvideo" and not self.extension and self.clip_frames() > self.exvideo_frames:
            raise ValueError(f"clips of {self.clip_frames()} frames do not fit a frame-position table of "
                             f"{self.exvideo_frames} (--exvideo-frames)")
        if (self.parameter_set == "exvideo" or self.extension) and self.progressive and self.progressive_chunk < 2:
            raise ValueError("exvideo with progressive needs --progressive-chunk >= 2: the first window of the "
                             "initialization stage is one chunk, and ExVideo's 3x3x3 conv needs at least 2 frames")
        for f in fields(self):  # NaN and inf pass every range check below; refuse them where they enter
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"{_flag(f.name)}: expected a finite number, found {value}")
            smallest = -1 if f.name in AUTOMATIC_WITH_MINUS_ONE else 0
            if isinstance(value, int) and not isinstance(value, bool) and value < smallest:
                raise UserError(f"{_flag(f.name)}: expected {smallest} or more"
                                f"{' (-1: automatic)' if smallest < 0 else ''}, found {value}")
        for name in ("frame_stride", "batch_size", "grad_accum", "max_steps", "clips_per_video", "vae_batch",
                     "log_every", "save_every", "exvideo_frames", "progressive_window", "progressive_chunk",
                     "progressive_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')}: expected 1 or more, found {getattr(self, name)}")
        for name in ("learning_rate", "adam_eps", "sigma_min", "sigma_max"):
            if not getattr(self, name) > 0:
                raise UserError(f"{_flag(name)}: expected a number > 0, found {getattr(self, name)}")
        if self.output_dir and Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise UserError(f"--output-dir: expected a folder (new or existing), found the file {self.output_dir}")
        if self.height % 8 or self.width % 8:
            raise ValueError(f"--height/--width must be multiples of 8 (SVD's VAE); found {self.height}x{self.width}")
        if not 0.0 <= self.conditioning_dropout < 1.0:
            raise ValueError(f"--conditioning-dropout must be in [0, 1); found {self.conditioning_dropout}")
        if not 0.0 <= self.guide_frame_fraction <= 1.0:
            raise ValueError(f"--guide-frame-fraction must be in [0, 1]; found {self.guide_frame_fraction}")
        if not 0.0 <= self.progressive_rollout_fraction <= 1.0:
            raise ValueError(f"--progressive-rollout-fraction must be in [0, 1]; found "
                             f"{self.progressive_rollout_fraction}")
        if self.progressive_rollout_fraction > 0:
            if not self.progressive:
                raise ValueError("--progressive-rollout-fraction runs the progressive sampler; add progressive "
                                 "to --mode")
            most = self.progressive_window // self.progressive_chunk - 1
            if not 1 <= self.progressive_rollout_periods <= most:
                raise ValueError(f"--progressive-rollout-periods must be in [1, {most}] (window / chunk - 1: one "
                                 f"noisy chunk is left for the loss); found {self.progressive_rollout_periods}")
        if not 0.0 <= self.image_batch_fraction <= 1.0:
            raise ValueError(f"--image-batch-fraction must be in [0, 1]; found {self.image_batch_fraction}")
        if not (self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0):
            raise ValueError(f"--ema-decay must be 0 (off) or in (0, 1); found {self.ema_decay}")
        if self.optimizer == "adamw8bit" and not self.estimate_memory:  # an estimate needs no library
            require_bitsandbytes(self.optimizer)  # before any model is loaded

    def to_dict(self) -> dict:
        return asdict(self)


# whole-number settings whose -1 means "from the clip" (see their help)
AUTOMATIC_WITH_MINUS_ONE = frozenset({"fps", "motion_bucket_id"})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python training/train.py",
        description="Train SVD / ExVideo-SVD for long videos: ExVideo post-tuning, PA-VDM progressive-noise "
                    "fine-tuning, or full fine-tuning of small models. Runs under accelerate (one GPU, DDP, "
                    "DeepSpeed ZeRO-2) or on the CPU. Recipes: docs/training.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default="", help="JSON or TOML file of settings (keys as below, _ or -); "
                        "command-line flags override it")
    groups = {}
    for f in fields(TrainConfig):
        group_name = f.metadata["group"]
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(group_name)
        group = groups[group_name]
        kwargs = {"default": f.default, "help": f.metadata["help"], "dest": f.name}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        if isinstance(f.default, bool):
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kwargs)
        else:
            group.add_argument(_flag(f.name), type=type(f.default), **kwargs)
    return parser


def read_config_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"--config {path}: expected a .toml or .json file; found {path.suffix or 'no suffix'}")
    try:
        text = path.read_text(encoding="utf-8")
        values = tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        # the parsers' messages name a line and column but not the file
        raise ValueError(f"--config {path}: expected valid {suffix[1:].upper()}; found an error: {exc}") from exc
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: expected a table/object of settings; found {type(values).__name__}")
    known = {f.name: f for f in fields(TrainConfig)}
    out = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ValueError(f"--config {path}: unknown setting {key!r}; valid settings: {', '.join(sorted(known))}")
        default = known[name].default
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not type(default):
            raise ValueError(f"--config {path}: {key} expects a {type(default).__name__}; found {value!r}")
        out[name] = value
    return out


def parse_config(argv=None) -> TrainConfig:
    """Defaults < ``--config`` file < command-line flags; then :meth:`TrainConfig.check`."""
    parser = build_parser()
    first, _ = parser.parse_known_args(argv)
    if first.config:
        parser.set_defaults(**read_config_file(first.config))
    args = parser.parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    config = TrainConfig(**values)
    config.check()
    return config


__all__ = ["MODES", "PRECISIONS", "TrainConfig", "build_parser", "read_config_file", "parse_config"]

