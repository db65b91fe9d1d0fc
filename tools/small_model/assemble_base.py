"""Assemble the untrained base of LongVid's small model as an SVD SGM single file.

UNet: SVD's architecture at 64/128 channels (freshly initialised, trained next by
``training/train.py``); VAE: the small temporal VAE from ``train_vae.py``; image encoder: a tiny
CLIP vision tower (ViT, 2 layers) left at its seeded random initialisation — SVD's image
embedding enters only through cross-attention, and the small model learns its scenes from the
concatenated first-frame latent and the clean context frames.

    python tools/small_model/assemble_base.py --vae build/small_model/vae.safetensors --out build/small_model/base.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from longvid_core.weights.checkpoint_io import open_tensors  # noqa: E402
from longvid_core.networks.image_encoder import build_image_encoder  # noqa: E402
from longvid_core import SVDModel, load_svd, save_svd  # noqa: E402
from longvid_core.evaluation.tiny import TINY_CLIP, TINY_UNET  # noqa: E402
from longvid_core.networks.unet import LongVidUNet  # noqa: E402
from longvid_core.networks.vae import build_vae  # noqa: E402

SMALL_UNET = dict(TINY_UNET)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    vae = p.add_mutually_exclusive_group(required=True)
    vae.add_argument("--vae", type=Path, help="a VAE written by train_vae.py")
    vae.add_argument("--vae-from-model", type=Path, help="take the VAE of this SGM model file (e.g. the bundled model)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.vae_from_model is not None:
        vae = load_svd(args.vae_from_model, dtype=torch.float32).vae
    else:
        vae_file = open_tensors(args.vae)
        vae = build_vae(json.loads(vae_file.metadata["config"]))
        vae.load_state_dict({k: vae_file[k] for k in vae_file}, strict=True)
    torch.manual_seed(args.seed)
    unet = LongVidUNet(**SMALL_UNET)
    encoder = build_image_encoder(TINY_CLIP)
    save_svd(SVDModel(unet.eval(), vae.eval(), encoder.eval()), args.out)
    print(f"wrote {args.out}: UNet {sum(p.numel() for p in unet.parameters()):,}, VAE "
          f"{sum(p.numel() for p in vae.parameters()):,}, image encoder {sum(p.numel() for p in encoder.parameters()):,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
