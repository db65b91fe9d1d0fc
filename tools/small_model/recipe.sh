# The small model's recipe: its dataset, the UNet's training flags and latest(), sourced by build.sh
# from the repository root. The data and cache folders, batch size, device and logging are build.sh's.

# the EMA weights of a run's newest finished checkpoint (a run folder of training/train.py)
latest() { echo "$1/checkpoints/$(cat "$1/checkpoints/latest")/model_ema.safetensors"; }

# 2,000 scenes of 64 frames; with the latent cache clip starts are fixed, so 4 clips per
# video (starts 0, 18, 36, 54) give 8,000 distinct 10-frame clips
write_recipe_dataset() {
    python -c "from longvid_core.synthetic import write_dataset; write_dataset('$1', 2000, 64, size=32, fps=8, seed=1)"
}

# what every UNet stage trains on: 10-frame 32x32 clips with SVD's conditioning at the sampler's
# settings, every weight in fp32 (the model is small), EMA 0.99
RECIPE_CLIPS=(--frames 10 --height 32 --width 32 --fps 8 --motion-bucket-id 127 --noise-aug-strength 0.02
              --weight-decay 0 --ema-decay 0.99 --precision fp32 --no-gradient-checkpointing --clips-per-video 4)

# progressive-noise fine-tuning on the sampler's own table (window 8, chunk 2, 16 steps), windows
# conditioned on their video's first frame as the sampler's later windows are (--condition-frame
# video), the clean chunk in front noised at a per-clip sigma up to 1 (context noise, the sampler's
# --context-sigma)
RECIPE_PROGRESSIVE=(--mode full,progressive --progressive-window 8 --progressive-chunk 2 --progressive-steps 16
                    --lr-warmup-steps 30 --condition-frame video --progressive-context-sigma 1.0)
