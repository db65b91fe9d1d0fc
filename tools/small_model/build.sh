#!/usr/bin/env bash
# Rebuild LongVid's bundled small model (longvid_core/assets/longvid_small.safetensors) from scratch
# on a CPU: synthetic videos -> small temporal VAE -> base SVD file -> UNet trained by
# training/train.py (full mode, then progressive fine-tuning) -> fp16 bundle. See README.md here.
# The UNet runs as two single-threaded DDP processes (torchrun over gloo), one per core.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build/small_model}
mkdir -p "$OUT"
# shellcheck source=tools/small_model/recipe.sh
source tools/small_model/recipe.sh  # the dataset, the UNet's training flags and latest()
write_recipe_dataset "$OUT/videos"
# 64 channels at every level: diffusers' temporal decoder normalises its last layer in 32 groups,
# and with 32 channels (one per group) flat colours are hard to reproduce
python tools/small_model/train_vae.py --out "$OUT/vae.safetensors" --steps 1500 --channels 64 64 64 --seed 11
python tools/small_model/assemble_base.py --vae "$OUT/vae.safetensors" --out "$OUT/base.safetensors"
# the decoder alone for 2,000 more steps (held-out L1 0.031 -> 0.012, squares stay square more
# often); the encoder, and so the latent space the UNet learns below, is unchanged
python tools/small_model/train_vae.py --decoder-from "$OUT/vae.safetensors" --out "$OUT/vae_decoder.safetensors" \
    --steps 2000 --lr 3e-4 --seed 21

# full mode 1,000 steps, then progressive fine-tuning to step 7,500 (train_unet in recipe.sh)
train_unet "$OUT" "$OUT/base.safetensors" run_progressive "${RECIPE_PROGRESSIVE[@]}"
python tools/small_model/bundle.py --model "$(latest "$OUT/run_progressive")" --vae "$OUT/vae_decoder.safetensors"
