"""Train the small temporal VAE of LongVid's bundled model on synthetic moving-shape clips.

SVD's VAE is far too big for a 2-core CPU; the bundled model uses the same architecture
(diffusers' ``AutoencoderKLTemporalDecoder``: LDM encoder + temporal "video" decoder) at 64
channels and factor-4 downsampling: 32×32 frames give 8×8 latents, which a 2-core CPU can sample
fast enough for a 240-frame video in under two minutes. Clips are rendered on the fly by ``longvid_core.evaluation.synthetic``.

After training, the latent scale is folded into the weights (encoder mean ×k, decoder input ×1/k,
an exact reparametrisation) so that latents × 0.18215 — SVD's fixed scale, which the rest of
LongVid uses — have unit standard deviation, as the UNet expects.

    python tools/small_model/train_vae.py --out build/small_model/vae.safetensors --steps 1500 --seed 11
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from longvid_core.weights.checkpoint_io import atomic_save_safetensors  # noqa: E402
from longvid_core.evaluation.synthetic import random_scene, render  # noqa: E402
from longvid_core.networks.vae import VAE_SCALE, build_vae  # noqa: E402

SMALL_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    block_out_channels=(64, 64, 64),  # the bundled model's; 32 channels lose flat colours (see README)
    layers_per_block=2,
    latent_channels=4,
)


def batch_of_clips(step: int, clips: int, frames: int, size: int, seed: int) -> torch.Tensor:
    """Frames ``[clips*frames, 3, H, W]`` in -1..1 of ``clips`` random scenes from a seeded start."""
    out = []
    for c in range(clips):
        scene_seed = seed * 1_000_003 + step * clips + c
        start = (scene_seed * 7919) % 97
        out.append(render(random_scene(scene_seed, size, size), frames, start=start))
    return torch.cat(out).permute(0, 3, 1, 2) * 2 - 1


def fold_latent_scale(vae, k: float) -> None:
    """Multiply the encoder's latent mean by ``k`` and divide the decoder's input by ``k``."""
    latent = vae.config.latent_channels
    with torch.no_grad():
        conv = vae.encoder.conv_out
        conv.weight[:latent] *= k
        conv.bias[:latent] *= k
        conv.bias[latent:] += 2 * math.log(k)  # log-variance of the scaled posterior
        vae.decoder.conv_in.weight /= k


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--clips", type=int, default=4, help="clips per batch")
    p.add_argument("--frames", type=int, default=4, help="frames per clip (the temporal decoder mixes them)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--channels", type=int, nargs="+", default=list(SMALL_VAE["block_out_channels"]),
                   help="block_out_channels; diffusers' temporal decoder normalises its last layer in 32 "
                        "groups, so more channels there keep more of each frame's absolute colour")
    p.add_argument("--decoder-from", type=Path, default=None,
                   help="fine-tune only the decoder of this trained VAE: the encoder, and so the latent space "
                        "a UNet was trained in, stays exactly as it is")
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    config = dict(SMALL_VAE, block_out_channels=tuple(args.channels),
                  down_block_types=("DownEncoderBlock2D",) * len(args.channels))
    if args.decoder_from is not None:
        from longvid_core.weights.checkpoint_io import open_tensors

        trained = open_tensors(args.decoder_from)
        config = json.loads(trained.metadata["config"])
    vae = build_vae(config).train()
    if args.decoder_from is not None:
        vae.load_state_dict({k: trained[k] for k in trained}, strict=True)
        vae.encoder.requires_grad_(False)
    # SVD's SGM layout has no quant_conv: it must stay the identity to be representable there
    with torch.no_grad():
        channels = 2 * config["latent_channels"]
        vae.quant_conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        vae.quant_conv.bias.zero_()
    vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    started = time.perf_counter()
    for step in range(args.steps):
        x = batch_of_clips(step, args.clips, args.frames, args.size, args.seed)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(), num_frames=args.frames).sample
        rec_loss = (recon - x).abs().mean() + ((recon - x) ** 2).mean()
        loss = rec_loss + (args.kl * posterior.kl().mean() if args.decoder_from is None else 0.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps - 1:
            rate = (step + 1) / (time.perf_counter() - started)
            print(f"step {step:5d}  recon {rec_loss.item():.4f}  latent std {posterior.mean.std().item():.3f}  "
                  f"{rate:.2f} steps/s", flush=True)

    vae.eval()
    with torch.no_grad():
        x = batch_of_clips(10**6, 8, args.frames, args.size, args.seed + 1)
        latent_std = vae.encode(x).latent_dist.mode().std().item()
    k = 1.0 / (VAE_SCALE * latent_std) if args.decoder_from is None else 1.0  # the latent space is kept
    fold_latent_scale(vae, k)
    with torch.no_grad():
        check = (vae.encode(x).latent_dist.mode() * VAE_SCALE).std().item()
        recon = vae.decode(vae.encode(x).latent_dist.mode(), num_frames=args.frames).sample
        err = (recon - x).abs().mean().item()
    print(f"folded latent scale k={k:.4f}: scaled latent std {check:.3f}; held-out L1 {err:.4f}")
    atomic_save_safetensors(vae.state_dict(), args.out,
                            metadata={"config": json.dumps(config), "steps": str(args.steps)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
