#!/usr/bin/env bash
# Rebuild LongVid's bundled small model (longvid_core/assets/longvid_small.safetensors) from scratch
# on a CPU: synthetic videos -> small temporal VAE -> base SVD file -> UNet trained by
# training/train.py (full mode, then progressive fine-tuning) -> fp16 bundle. See README.md here.
# The UNet runs as two single-threaded DDP processes (torchrun over gloo), one per core.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build/small_model}
NPROC=${NPROC:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors: one thread per process avoids oversubscription
mkdir -p "$OUT"
launch() { python -m torch.distributed.run --nproc_per_node "$NPROC" --master_port "${MASTER_PORT:-29611}" "$@"; }

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

COMMON=(--data-dir "$OUT/videos" --cache-dir "$OUT/cache" --batch-size 4 --cpu --log-every 25 "${RECIPE_CLIPS[@]}")
# 1. every UNet weight, ordinary (one sigma per clip) EDM training; batch 4 per process
launch training/train.py --base "$OUT/base.safetensors" --output-dir "$OUT/run_full" --mode full \
    --max-steps 1000 --learning-rate 3e-4 --lr-warmup-steps 30 --save-every 250 "${COMMON[@]}"
# 2. progressive-noise fine-tuning (RECIPE_PROGRESSIVE in recipe.sh says how); then the same run
#    resumed at a quarter of the learning rate
PROGRESSIVE=(--base "$(latest "$OUT/run_full")" --output-dir "$OUT/run_progressive" "${RECIPE_PROGRESSIVE[@]}"
             --save-every 250 "${COMMON[@]}")
launch training/train.py "${PROGRESSIVE[@]}" --max-steps 4000 --learning-rate 2e-4
launch training/train.py "${PROGRESSIVE[@]}" --max-steps 7500 --learning-rate 5e-5 --resume latest
python tools/small_model/bundle.py --model "$(latest "$OUT/run_progressive")" --vae "$OUT/vae_decoder.safetensors"
