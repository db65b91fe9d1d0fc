"""Write the trained small model into the repository as ``longvid_core/assets/longvid_small.safetensors``.

fp16 weights (the file stays well under 20 MB) in SVD's SGM single-file layout, plus the settings
it was trained for in the metadata (``longvid.defaults``), which ``longvid generate`` uses when no
weights are given.

    python tools/small_model/bundle.py --model build/small_model/run_progressive/checkpoints/latest/model_ema.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from longvid_core import load_svd  # noqa: E402
from longvid_core.weights.checkpoint_io import atomic_save_safetensors, open_tensors  # noqa: E402
from longvid_core.weights.loading import sgm_state_dict  # noqa: E402
from longvid_core.run.pipeline import BUNDLED_MODEL, DEFAULTS_KEY  # noqa: E402

# What the model was trained for (see build.sh): 32x32 frames, window 8, chunk 2, 16 progressive steps.
SMALL_MODEL_DEFAULTS = dict(width=32, height=32, frames=240, window=8, chunk=2, steps=16, cfg=1.0, min_cfg=1.0,
                            fps=8, motion_bucket_id=127, noise_aug_strength=0.02, output_fps=8,
                            # the VAE was trained on 4-frame clips: its temporal decoder is 3x more
                            # accurate decoding 4 frames at a time than SVD's 14 (train_vae.py --frames)
                            decode_window=4, decode_overlap=2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a trained full-mode model.safetensors (SGM layout)")
    p.add_argument("--vae", type=Path, default=None,
                   help="VAE weights (train_vae.py output) to use instead of the model's, e.g. the decoder-tuned one")
    p.add_argument("--out", type=Path, default=BUNDLED_MODEL)
    args = p.parse_args(argv)
    model = load_svd(args.model, dtype=torch.float16)
    if args.vae is not None:
        vae_file = open_tensors(args.vae, dtype=torch.float16)
        model.vae.load_state_dict({k: vae_file[k] for k in vae_file}, strict=True)
    state = sgm_state_dict(model)
    trained_for = model.trained_for.to_metadata() if model.trained_for else {}  # what `auto` reads
    atomic_save_safetensors(state, args.out, metadata={
        "format": "pt",
        **trained_for,
        DEFAULTS_KEY: json.dumps(SMALL_MODEL_DEFAULTS),
        "longvid.description": "LongVid small model: SVD architecture (UNet 64/128 channels, VAE 64), trained on "
                               "synthetic moving shapes by tools/small_model/build.sh",
    })
    print(f"wrote {args.out}: {len(state)} tensors, {args.out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
