"""Train the tiny CLIP image tower of LongVid's small model to say which shape each colour is.

SVD keeps an object's identity over a clip partly through one cross-attention token, the CLIP
embedding of the conditioning picture (``conditioning.encode_image``); real SVD's tower was trained
on images first and frozen. The bundled model's tower is a seeded random ViT, whose embedding is a
random function of the picture. Here the same tower (ViT, 2 layers of width 64) is trained first, on
what the small model loses window after window: for each palette colour, which kind of shape (none,
disc, square, diamond) the picture holds. A linear read-out of the 32-d embedding is trained with
it and thrown away, as is a per-patch kind read-out that gets the ViT off chance sooner; the
embedding is then rescaled to unit RMS. ``assemble_base.py --image-encoder`` puts it in a base.
Tried, not kept (tools/small_model/README.md): the UNet trained on it kept form no better.

The tower of that experiment (kind accuracy 0.89 on the colours present, held out):

    python tools/small_model/train_image_encoder.py --out ie0.safetensors --steps 4000
    python tools/small_model/train_image_encoder.py --init-from ie0.safetensors --out ie.safetensors --steps 3000 --seed 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from longvid_core.checkpoint_io import atomic_save_safetensors, open_tensors  # noqa: E402
from longvid_core.image_encoder import build_image_encoder, clip_preprocess  # noqa: E402
from longvid_core.synthetic import (  # noqa: E402
    PALETTE, SHAPE_KINDS, coverage_fractions, kind_coverage, random_scene, render)
from longvid_core.tiny import TINY_CLIP  # noqa: E402

CLASSES = 1 + len(SHAPE_KINDS)  # per palette colour (and per patch): none, or one of the kinds
TOWER_KIND = "longvid-small-image-encoder"  # metadata "kind" of the files this script writes; assemble_base checks it


def pictures_and_kinds(seed: int, count: int, size: int, frames: int = 64):
    """``count`` frames ``[N, H, W, 3]`` in 0..1 (8-bit, as decoded video) from random scenes at a
    random frame, and per palette colour the kind it has there ``[N, len(PALETTE)]`` (0 = absent;
    a scene's shapes have distinct colours)."""
    images, covers, labels = [], [], torch.zeros(count, len(PALETTE), dtype=torch.long)
    for n in range(count):
        scene_seed = seed * 1_000_003 + n
        scene = random_scene(scene_seed, size, size)
        start = (scene_seed * 7919) % frames
        images.append((render(scene, 1, start=start)[0] * 255).round() / 255)
        covers.append(kind_coverage(scene, 1, start=start)[0])
        for shape in scene.shapes:
            labels[n, PALETTE.index(shape.color)] = 1 + SHAPE_KINDS.index(shape.kind)
    return torch.stack(images), coverage_fractions(torch.stack(covers), size), labels


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=32, help="frame side, as the UNet's training videos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=TINY_CLIP["hidden_size"],
                   help="transformer width (heads: width / 64, OpenCLIP's rule the loader follows)")
    p.add_argument("--layers", type=int, default=TINY_CLIP["num_hidden_layers"])
    p.add_argument("--init-from", type=Path, default=None,
                   help="continue from a tower this script wrote (its architecture; the read-outs start afresh)")
    p.add_argument("--patch-weight", type=float, default=1.0, help="weight of the per-patch kind loss")
    p.add_argument("--patch", type=int, default=TINY_CLIP["patch_size"], help="patch side at CLIP's 224x224 input")
    args = p.parse_args(argv)

    config = dict(TINY_CLIP, hidden_size=args.width, intermediate_size=2 * args.width,
                  num_attention_heads=max(1, args.width // 64), num_hidden_layers=args.layers,
                  patch_size=args.patch)
    torch.manual_seed(args.seed)
    if args.init_from is not None:
        trained = open_tensors(args.init_from)
        config = json.loads(trained.metadata["config"])
    encoder = build_image_encoder(config).train()
    if args.init_from is not None:
        encoder.load_state_dict({k: trained[k] for k in trained}, strict=True)
    head = torch.nn.Linear(config["projection_dim"], len(PALETTE) * CLASSES)
    # Dense help: every patch token also says which kinds it covers (a CNN on the frames needs
    # such per-pixel targets to leave chance within a few hundred steps; the per-colour labels
    # alone left this ViT at chance for 1,800 steps).
    patch_head = torch.nn.Linear(config["hidden_size"], CLASSES)
    grid = config["image_size"] // config["patch_size"]
    params = list(encoder.parameters()) + list(head.parameters()) + list(patch_head.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.steps, pct_start=0.05)
    held_images, _, held_labels = pictures_and_kinds(10_000 + args.seed, 512, args.size)
    held_pixels = clip_preprocess(held_images)

    def colour_logits(embeds):
        return head(embeds).view(-1, len(PALETTE), CLASSES)

    start = time.time()
    for step in range(1, args.steps + 1):
        images, covers, labels = pictures_and_kinds(args.seed * 7 + step, args.batch, args.size)
        out = encoder(pixel_values=clip_preprocess(images))
        colour_loss = torch.nn.functional.cross_entropy(colour_logits(out.image_embeds).flatten(0, 1),
                                                        labels.flatten())
        patch_logits = patch_head(out.last_hidden_state[:, 1:]).transpose(1, 2).reshape(-1, CLASSES, grid, grid)
        patch_target = torch.nn.functional.adaptive_avg_pool2d(covers, grid)  # kind coverage of each patch
        patch_loss = torch.nn.functional.cross_entropy(patch_logits, patch_target)
        loss = colour_loss + args.patch_weight * patch_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps:
            with torch.no_grad():
                encoder.eval()
                pred = colour_logits(encoder(pixel_values=held_pixels).image_embeds).argmax(-1)
                encoder.train()
            present = held_labels > 0
            print(f"step {step}: colour loss {colour_loss.item():.4f} patch loss {patch_loss.item():.4f} "
                  f"held-out accuracy {(pred == held_labels).float().mean():.3f} "
                  f"on present colours {(pred == held_labels)[present].float().mean():.3f} "
                  f"({time.time() - start:.0f} s)", flush=True)

    encoder.eval()
    with torch.no_grad():
        embeds = encoder(pixel_values=held_pixels).image_embeds
        pred = colour_logits(embeds).argmax(-1)
        # Unit RMS embedding: the UNet's cross-attention keys and values start from a sensible scale.
        rms = embeds.pow(2).mean().sqrt()
        encoder.visual_projection.weight.div_(rms)
    accuracy = (pred == held_labels)[held_labels > 0].float().mean().item()
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    atomic_save_safetensors(state, args.out, metadata={
        "kind": TOWER_KIND, "config": json.dumps(config), "steps": str(args.steps),
        "kind_accuracy_present_colours": f"{accuracy:.4f}", "embed_rms_before_rescale": f"{rms.item():.4f}"})
    print(f"wrote {args.out}: kind accuracy on present colours {accuracy:.3f} (held-out, 512 pictures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
