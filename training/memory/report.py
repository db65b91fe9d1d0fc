"""``python -m training.memory``: measure (or refit) and print the fit, the checks outside it and
the table of docs/training.md (peak per mode and clip, and what fits 24/48/80 GB)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .estimating import Setting, format_prediction, load_coefficients, predict
from .measuring import coefficients_from, run_measurements, steps_from
from .plans import COEFFICIENTS, GIB, full_size_plan, tiny_plan

DOC_SETTINGS = (("512x512x25", 512, 512, 25), ("1024x576x25", 1024, 576, 25), ("512x512x128", 512, 512, 128))
DOC_MODES = ("exvideo", "exvideo,progressive", "lora,progressive", "full")


def fit_table(coeffs: dict) -> list[str]:
    """Markdown rows: peak GiB per mode and size, and the first option list that fits 24/48/80 GB."""
    from dataclasses import replace

    # one-GPU options first (what a user owns), then more GPUs
    options = (("plain", {}), ("8-bit states", dict(eight_bit=True)),
               ("1 GPU, ZeRO-2 offload", dict(zero_stage=2, gpus=1, offload=True)),
               ("ZeRO-2 x2", dict(zero_stage=2, gpus=2)), ("ZeRO-2 x4", dict(zero_stage=2, gpus=4)),
               ("ZeRO-2 x8", dict(zero_stage=2, gpus=8)),
               ("ZeRO-2 x8 + offload", dict(zero_stage=2, gpus=8, offload=True)))
    rows = ["| mode | clip (WxHxF) | peak, plain AdamW | 24 GB | 48 GB | 80 GB |", "|---|---|---|---|---|---|"]
    for mode in DOC_MODES:
        for label, width, height, frames in DOC_SETTINGS:
            if "progressive" in mode:
                if frames != 25:
                    continue
                frames = 26  # chunk 2 + window 24
                label = label.replace("x25", "x26")
            plain = Setting(mode=mode, height=height, width=width, frames=frames)
            cells = []
            for capacity in (24, 48, 80):
                first = next((name for name, kw in options if predict(coeffs, replace(plain, **kw)).fits(capacity)),
                             None)
                cells.append(first if first else "no")
            rows.append(f"| {mode} | {label} | {predict(coeffs, plain).total / GIB:.1f} GiB | " + " | ".join(cells)
                        + " |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.memory", description="Memory of a training step: measured on the CPU, predicted for a GPU.")
    parser.add_argument("--full-size", action="store_true", help="measure the full-size SVD-XT UNet (about 16 "
                        "minutes on 2 CPU cores, under 12 GB of RAM); default: the tiny test config")
    parser.add_argument("--out", default="", help="write the coefficients here (default: "
                        "training/memory_coefficients.json with --full-size, nowhere otherwise)")
    parser.add_argument("--table", action="store_true", help="print the fit table from the stored measurement "
                        "and exit")
    parser.add_argument("--refit", default="", help="fit again from the steps stored in this file (no measuring)")
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(fit_table(load_coefficients(args.out or COEFFICIENTS))))
        return 0
    plan = full_size_plan() if args.full_size else tiny_plan()
    if args.refit:
        old = load_coefficients(args.refit)
        coeffs = coefficients_from(old["plan"], plan.config, plan.exvideo_frames, steps_from(old),
                                   old["layout_tensors_checked"], old["measured_utc"])
    else:
        coeffs = run_measurements(plan)
    for key, entry in coeffs["activations"].items():
        for phase, fit in entry.items():
            print(f"fit {key:<16} {phase:<8} activations = {fit['a'] / GIB:.4f} GiB + {fit['b']:.0f} B x pixels x "
                  f"frames x batch + {fit['c']:.0f} B x pixels x batch [fitted to measurements; worst residual "
                  f"{fit['max_residual'] / GIB:.4f} GiB]")
    for check in coeffs["extrapolation_checks"]:
        print(f"check {check['mode']} {check['phase']} at {check['units']:,} units (outside the fit): "
              f"activations measured {check['measured'] / GIB:.4f} GiB, fit predicts "
              f"{check['predicted'] / GIB:.4f} GiB")
    print(f"AdamW states {coeffs['optimizer_bytes_per_param']:.3f} bytes/param [measured]; optimizer step "
          f"temporaries {coeffs['optimizer_step_extra_per_param']:.3f} bytes/param [measured]; fp32/bf16 "
          f"activations x{coeffs['fp32_activation_ratio']:.2f} [measured]")
    out = args.out or (str(COEFFICIENTS) if args.full_size else "")
    if out:
        Path(out).write_text(json.dumps(coeffs, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {out}")
    if plan.name.startswith("full"):
        for mode in DOC_MODES:
            print(format_prediction(predict(coeffs, Setting(mode=mode, frames=26 if "progressive" in mode else 25))))
        print("\n".join(fit_table(coeffs)))
    return 0
