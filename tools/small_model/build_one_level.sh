#!/usr/bin/env bash
# The one-level small model (bench/assets/longvid_small_one_level.safetensors): the bundled model's
# recipe with one noise level per clip in both UNet stages (8,500 steps, as many as the bundled
# model's two stages), on the bundled model's VAE and seeded image tower, so that the bench compares
# weights trained the way SVD-XT and ExVideo were against progressively fine-tuned ones. About 90
# minutes on a 2-core CPU. See README.md here.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-build/one_level_model}
mkdir -p "$OUT"
# shellcheck source=tools/small_model/recipe.sh
source tools/small_model/recipe.sh
[ -d "$OUT/videos" ] || write_recipe_dataset "$OUT/videos"
python tools/small_model/assemble_base.py --vae-from-model longvid_core/assets/longvid_small.safetensors \
    --out "$OUT/base.safetensors"
train_unet "$OUT" "$OUT/base.safetensors" run_one_level "${RECIPE_ONE_LEVEL[@]}"
python tools/small_model/bundle.py --model "$(latest "$OUT/run_one_level")" \
    --out bench/assets/longvid_small_one_level.safetensors
