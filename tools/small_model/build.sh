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
latest() { echo "$1/checkpoints/$(cat "$1/checkpoints/latest")/model_ema.safetensors"; }

# 2,000 scenes of 64 frames; with the latent cache clip starts are fixed, so 4 clips per video
# (starts 0, 18, 36, 54) give 8,000 distinct 10-frame clips
python -c "from longvid_core.synthetic import write_dataset; write_dataset('$OUT/videos', 2000, 64, size=32, fps=8, seed=1)"
# 64 channels at every level: diffusers' temporal decoder normalises its last layer in 32 groups,
# and with 32 channels (one per group) flat colours are hard to reproduce
python tools/small_model/train_vae.py --out "$OUT/vae.safetensors" --steps 1500 --channels 64 64 64 --seed 11
python tools/small_model/assemble_base.py --vae "$OUT/vae.safetensors" --out "$OUT/base.safetensors"
# the decoder alone for 2,000 more steps (held-out L1 0.031 -> 0.012, squares stay square more
# often); the encoder, and so the latent space the UNet learns below, is unchanged
python tools/small_model/train_vae.py --decoder-from "$OUT/vae.safetensors" --out "$OUT/vae_decoder.safetensors" \
    --steps 2000 --lr 3e-4 --seed 21

COMMON=(--data-dir "$OUT/videos" --frames 10 --height 32 --width 32 --cache-dir "$OUT/cache" --fps 8
        --motion-bucket-id 127 --noise-aug-strength 0.02 --batch-size 4 --weight-decay 0 --ema-decay 0.99
        --precision fp32 --no-gradient-checkpointing --cpu --log-every 25 --clips-per-video 4)
# 1. every UNet weight, ordinary (one sigma per clip) EDM training; batch 4 per process
launch training/train.py --base "$OUT/base.safetensors" --output-dir "$OUT/run_full" --mode full \
    --max-steps 1000 --learning-rate 3e-4 --lr-warmup-steps 30 --save-every 250 "${COMMON[@]}"
# 2. progressive-noise fine-tuning on the sampler's own table (window 8, chunk 2, 16 steps), windows
#    conditioned on their video's first frame as the sampler's later windows are (--condition-frame
#    video), the clean chunk in front noised at a per-clip sigma up to 1 (context noise, the
#    sampler's --context-sigma); then the same run resumed at a quarter of the learning rate
PROGRESSIVE=(--base "$(latest "$OUT/run_full")" --output-dir "$OUT/run_progressive" --mode full,progressive
             --progressive-window 8 --progressive-chunk 2 --progressive-steps 16 --lr-warmup-steps 30
             --condition-frame video --progressive-context-sigma 1.0 --save-every 250 "${COMMON[@]}")
launch training/train.py "${PROGRESSIVE[@]}" --max-steps 4000 --learning-rate 2e-4
launch training/train.py "${PROGRESSIVE[@]}" --max-steps 7500 --learning-rate 5e-5 --resume latest
python tools/small_model/bundle.py --model "$(latest "$OUT/run_progressive")" --vae "$OUT/vae_decoder.safetensors"
