"""Train the small temporal VAE of LongVid's bundled model on synthetic moving-shape clips.

SVD's VAE is far too big for a 2-core CPU; the bundled model uses the same architecture
(diffusers' ``AutoencoderKLTemporalDecoder``: LDM encoder + temporal "video" decoder) at 64
channels and factor-4 downsampling: 32×32 frames give 8×8 latents, which a 2-core CPU can sample
fast enough for a 240-frame video in under two minutes. Clips are rendered on the fly by ``longvid_core.synthetic``.

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

from longvid_core.checkpoint_io import atomic_save_safetensors  # noqa: E402
from longvid_core.synthetic import (  # noqa: E402
    PALETTE, SHAPE_KINDS, colour_coverage, coverage_fractions, kind_coverage, random_scene, render)
from longvid_core.vae import VAE_SCALE, build_vae  # noqa: E402

SMALL_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    block_out_channels=(64, 64, 64),  # the bundled model's; 32 channels lose flat colours (see README)
    layers_per_block=2,
    latent_channels=4,
)


def batch_of_clips(step: int, clips: int, frames: int, size: int, seed: int, kinds: bool = False,
                   colours: bool = False):
    """Frames ``[clips*frames, 3, H, W]`` in -1..1, with ``kinds`` each pixel's visible kind
    coverage ``[clips*frames, K, H, W]`` (``synthetic.kind_coverage``; else ``None``) and with
    ``colours`` its visible palette-colour coverage (``synthetic.colour_coverage``; else ``None``)."""
    out, kind_cover, colour_cover = [], [], []
    for c in range(clips):
        scene_seed = seed * 1_000_003 + step * clips + c
        start = (scene_seed * 7919) % 97
        scene = random_scene(scene_seed, size, size)
        out.append(render(scene, frames, start=start))
        if kinds:
            kind_cover.append(kind_coverage(scene, frames, start=start))
        if colours:
            colour_cover.append(colour_coverage(scene, frames, start=start))
    x = torch.cat(out).permute(0, 3, 1, 2) * 2 - 1
    return x, (torch.cat(kind_cover) if kinds else None), (torch.cat(colour_cover) if colours else None)


class KindCode(torch.nn.Module):
    """Auxiliary loss that makes the latent carry each shape's kind as a per-location code.

    Why: at 8x8 latents a shape spans about two latent pixels, so its outline (disc, square,
    diamond) lives in small sub-pixel patterns that the small UNet smooths away window after window
    (tools/small_model/README.md, "How the recipe got here"), while colour, a per-location value,
    survives. Here a linear classifier reads every latent pixel (the latent mean in units of its own
    standard deviation) and must tell background and the three kinds apart (soft cross-entropy
    against the pixel-averaged visible coverage). Its rows have unit norm and a fixed
    ``sharpness``, so confident answers need the classes to lie about 1/sharpness latent standard
    deviations apart or more: kind is carried as plainly as colour and the decoder can draw the outline
    from it. Only the encoder and this read-out see the loss; the read-out is not saved. Measured
    (tools/small_model/README.md): the sampled form rose from 0.12 to 0.43 but colours were kept
    worse, so build.sh leaves it off. Half the weight (0.5) learned the code as well and sampled the
    same. With ``--colour-code`` as well (weight 1 each) the two did not both take in four latent
    channels: from scratch the kind read-out stayed at chance while colour reached 0.97, and added
    to the kind-coded VAE (``--init-from``, 1,000 steps) the colour code drove kind back to chance."""

    def __init__(self, latent_channels: int, sharpness: float, kinds: int = len(SHAPE_KINDS)):
        super().__init__()
        # ``kinds`` classes besides background: the three shape kinds, or the palette's colours
        # for the colour code (``--colour-code``, same read-out on a coverage of colours)
        self.read_out = torch.nn.Parameter(torch.randn(1 + kinds, latent_channels))
        self.bias = torch.nn.Parameter(torch.zeros(1 + kinds))
        self.sharpness = sharpness

    def classes(self, cover: torch.Tensor, latent_size: int) -> torch.Tensor:
        """Background and kind fractions ``[N, 1+K, h, w]`` per latent pixel."""
        return coverage_fractions(cover, latent_size)

    def logits(self, latent_mean: torch.Tensor) -> torch.Tensor:
        rows = self.read_out / self.read_out.norm(dim=1, keepdim=True)
        z = latent_mean / latent_mean.std()  # scale-free: the latent scale is folded away later
        return self.sharpness * torch.einsum("nlhw,cl->nchw", z, rows) + self.bias[:, None, None]

    def forward(self, latent_mean: torch.Tensor, cover: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(soft cross-entropy, accuracy on latent pixels that mostly show a shape)."""
        target = self.classes(cover, latent_mean.shape[-1])
        logits = self.logits(latent_mean)
        loss = -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()
        label = target.argmax(1)
        shape = label > 0
        accuracy = float((logits.argmax(1)[shape] == label[shape]).float().mean()) if shape.any() else float("nan")
        return loss, accuracy


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
    p.add_argument("--kind-code", type=float, default=0.0,
                   help="weight of the auxiliary loss that makes latents carry each shape's kind (KindCode); 0: off")
    p.add_argument("--kind-sharpness", type=float, default=3.0,
                   help="KindCode's fixed logit scale: classes must lie about 1/sharpness latent sds apart")
    p.add_argument("--colour-code", type=float, default=0.0,
                   help="weight of the same auxiliary loss on each latent pixel's palette colour (KindCode with "
                        "the palette as classes), so that colour is carried as plainly as kind; 0: off")
    p.add_argument("--decoder-from", type=Path, default=None,
                   help="fine-tune only the decoder of this trained VAE: the encoder, and so the latent space "
                        "a UNet was trained in, stays exactly as it is")
    p.add_argument("--init-from", type=Path, default=None,
                   help="start every weight from this trained VAE (its config too) and train on, e.g. to add "
                        "--colour-code to a latent space that already carries --kind-code; the latent scale is "
                        "folded again at the end")
    args = p.parse_args(argv)
    if args.init_from is not None and args.decoder_from is not None:
        raise SystemExit("--init-from trains every weight, --decoder-from only the decoder: give one of them")

    torch.manual_seed(args.seed)
    config = dict(SMALL_VAE, block_out_channels=tuple(args.channels),
                  down_block_types=("DownEncoderBlock2D",) * len(args.channels))
    start_from = args.decoder_from or args.init_from
    if start_from is not None:
        from longvid_core.checkpoint_io import open_tensors

        trained = open_tensors(start_from)
        config = json.loads(trained.metadata["config"])
    vae = build_vae(config).train()
    if start_from is not None:
        vae.load_state_dict({k: trained[k] for k in trained}, strict=True)
    if args.decoder_from is not None:
        vae.encoder.requires_grad_(False)
    # SVD's SGM layout has no quant_conv: it must stay the identity to be representable there
    with torch.no_grad():
        channels = 2 * config["latent_channels"]
        vae.quant_conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        vae.quant_conv.bias.zero_()
    vae.quant_conv.requires_grad_(False)
    kind_code = KindCode(config["latent_channels"], args.kind_sharpness) if args.kind_code > 0 else None
    colour_code = (KindCode(config["latent_channels"], args.kind_sharpness, kinds=len(PALETTE))
                   if args.colour_code > 0 else None)
    if (kind_code is not None or colour_code is not None) and args.decoder_from is not None:
        raise SystemExit("--kind-code and --colour-code shape the encoder's latents; --decoder-from keeps the "
                         "encoder fixed")
    params = [p for p in vae.parameters() if p.requires_grad]
    params += [p for code in (kind_code, colour_code) if code is not None for p in code.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05)
    started = time.perf_counter()
    for step in range(args.steps):
        x, cover, colour_cover = batch_of_clips(step, args.clips, args.frames, args.size, args.seed,
                                                kinds=kind_code is not None, colours=colour_code is not None)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(), num_frames=args.frames).sample
        rec_loss = (recon - x).abs().mean() + ((recon - x) ** 2).mean()
        loss = rec_loss + (args.kl * posterior.kl().mean() if args.decoder_from is None else 0.0)
        if kind_code is not None:
            kind_loss, kind_acc = kind_code(posterior.mean, cover)
            loss = loss + args.kind_code * kind_loss
        if colour_code is not None:
            colour_loss, colour_acc = colour_code(posterior.mean, colour_cover)
            loss = loss + args.colour_code * colour_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 25 == 0 or step == args.steps - 1:
            rate = (step + 1) / (time.perf_counter() - started)
            kind = f"kind {kind_loss.item():.3f} acc {kind_acc:.2f}  " if kind_code is not None else ""
            kind += f"colour {colour_loss.item():.3f} acc {colour_acc:.2f}  " if colour_code is not None else ""
            print(f"step {step:5d}  recon {rec_loss.item():.4f}  {kind}latent std {posterior.mean.std().item():.3f}  "
                  f"{rate:.2f} steps/s", flush=True)

    vae.eval()
    with torch.no_grad():
        x, _, _ = batch_of_clips(10**6, 8, args.frames, args.size, args.seed + 1)
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
