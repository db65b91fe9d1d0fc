# The small model's recipe: its dataset, the UNet's training flags and stages, sourced from the
# repository root by build.sh (the bundled model) and build_one_level.sh (the bench's one-level model).

# the EMA weights of a run's newest finished checkpoint (a run folder of training/train.py)
latest() { echo "$1/checkpoints/$(cat "$1/checkpoints/latest")/model_ema.safetensors"; }

# 2,000 scenes of 64 frames; with the latent cache clip starts are fixed, so 4 clips per
# video (starts 0, 18, 36, 54) give 8,000 distinct 10-frame clips
write_recipe_dataset() {
    python tools/small_model/write_dataset.py "$1" --videos 2000 --frames 64 --size 32 --fps 8 --seed 1
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

# the same stage 2 with one noise level per clip: the one-level model (build_one_level.sh), which
# stands in for SVD-XT / ExVideo in the bench (weights never trained with per-frame noise)
RECIPE_ONE_LEVEL=(--mode full --lr-warmup-steps 30 --condition-frame video)

NPROC=${NPROC:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny tensors: one thread per process avoids oversubscription
launch() { python -m torch.distributed.run --nproc_per_node "$NPROC" --master_port "${MASTER_PORT:-29611}" "$@"; }

# train_unet OUT BASE RUN STAGE2_FLAGS...: the UNet's two stages on OUT/videos, 8,500 steps of
# batch 8 in all: 1,000 ordinary steps at 3e-4 (OUT/run_full), then STAGE2_FLAGS from that run's
# EMA weights, 4,000 steps at 2e-4 and resumed to step 7,500 at 5e-5 (OUT/RUN). Every stage resumes
# from its newest checkpoint, so an interrupted build continues where it stopped.
train_unet() {
    local out=$1 base=$2 run=$3
    shift 3
    local common=(--data-dir "$out/videos" --cache-dir "$out/cache" --batch-size 4 --cpu --log-every 25
                  --save-every 250 --resume latest "${RECIPE_CLIPS[@]}")
    launch training/train.py --base "$base" --output-dir "$out/run_full" --mode full \
        --max-steps 1000 --learning-rate 3e-4 --lr-warmup-steps 30 "${common[@]}"
    local stage2=(--base "$(latest "$out/run_full")" --output-dir "$out/$run" "$@" "${common[@]}")
    launch training/train.py "${stage2[@]}" --max-steps 4000 --learning-rate 2e-4
    launch training/train.py "${stage2[@]}" --max-steps 7500 --learning-rate 5e-5
}
