#!/usr/bin/env bash
# Rebuild LongVid's bundled small model (longvid_core/assets/longvid_small.safetensors) from scratch
# on a CPU: synthetic videos -> small temporal VAE -> base SVD file -> UNet trained by
# training/train.py (full mode, then progressive fine-tuning) -> fp16 bundle. See README.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build/small_model}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors: one thread avoids oversubscription
mkdir -p "$OUT"

python -c "from longvid_core.synthetic import write_dataset; write_dataset('$OUT/videos', 400, 40, size=32, fps=8, seed=1)"
python tools/small_model/train_vae.py --out "$OUT/vae.safetensors" --steps 800
python tools/small_model/assemble_base.py --vae "$OUT/vae.safetensors" --out "$OUT/base.safetensors"

COMMON=(--data-dir "$OUT/videos" --frames 10 --height 32 --width 32 --cache-dir "$OUT/cache" --fps 8
        --motion-bucket-id 127 --noise-aug-strength 0.02 --batch-size 4 --weight-decay 0 --ema-decay 0.99
        --precision fp32 --no-gradient-checkpointing --cpu --log-every 10)
# 1. every UNet weight, ordinary (one sigma per clip) EDM training
python training/train.py --base "$OUT/base.safetensors" --output-dir "$OUT/run_full" --mode full \
    --max-steps 400 --learning-rate 3e-4 --lr-warmup-steps 30 --save-every 100 "${COMMON[@]}"
# 2. progressive-noise fine-tuning on the sampler's own table (window 8, chunk 2, 8 steps)
python training/train.py --base "$OUT/run_full/checkpoints/$(cat "$OUT/run_full/checkpoints/latest")/model_ema.safetensors" \
    --output-dir "$OUT/run_progressive" --mode full,progressive --progressive-window 8 --progressive-chunk 2 \
    --progressive-steps 8 --max-steps "${PROGRESSIVE_STEPS:-1400}" --learning-rate 1e-4 --save-every 300 "${COMMON[@]}"
# 3. a sharper decoder for the same latent space (encoder frozen, so the UNet's latents still fit)
python tools/small_model/train_vae.py --decoder-from "$OUT/vae.safetensors" --out "$OUT/vae_decoder_tuned.safetensors" \
    --steps 500 --lr 3e-4 --seed 5
python tools/small_model/bundle.py --vae "$OUT/vae_decoder_tuned.safetensors" --model "$OUT/run_progressive/checkpoints/$(cat "$OUT/run_progressive/checkpoints/latest")/model_ema.safetensors"
