"""Which base weights a file was made for: a content identity of an SVD UNet.

An extension, a LoRA or a trainer checkpoint is made on top of one base checkpoint. Files of the
same architecture (SVD, SVD-XT, SVD-XT 1.1, a fine-tune) load onto each other without error, so the
architecture check in ``exvideo`` cannot tell them apart; their weights can. The identity is a
fixed sample of the base UNet's weight values: a few elements of each of up to ``SAMPLED_TENSORS``
tensors, at positions that depend only on the tensor's name and size. Taking it reads a few hundred
numbers, however large the model, so it is free at load time.

Identities are compared with a tolerance, not as a hash: the same base saved in fp16, bf16 or fp32
(svd_xt.safetensors and its fp16 copies) must count as the same base. Different trainings of one
architecture differ in nearly every sampled value by far more than a rounding.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping

import torch

META_BASE_CONTENT = "longvid.base_content"  # file metadata key: JSON of :func:`content_identity`
IDENTITY_VERSION = 1
SAMPLED_TENSORS = 64
VALUES_PER_TENSOR = 4
# bf16 keeps 8 significant bits (relative rounding <= 2**-8 = 0.4%); 2% leaves room for that and
# for fp16's flush of tiny values, while unrelated weights differ by tens of percent.
RELATIVE_TOLERANCE = 2e-2
ABSOLUTE_TOLERANCE = 1e-4
# a base counts as the same when at least this share of the samples agree (a fine-tune that moved
# a handful of layers is a different base; one odd value is not)
AGREEING_SHARE = 0.95


def _position(name: str, numel: int, k: int) -> int:
    digest = hashlib.sha256(f"{name}#{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % numel


def content_identity(unet: torch.nn.Module, exclude=lambda name: False) -> dict:
    """The identity of ``unet``'s weights: ``{"version", "tensors", "names", "values"}``.

    ``exclude(name)``: tensors that are not part of the base (an ExVideo extension's new tensors,
    LoRA layers). Works on any device and dtype; values are read as float32."""
    state = unet.state_dict()
    names = sorted(n for n, t in state.items() if t.numel() > 0 and t.is_floating_point() and not exclude(n))
    if not names:
        raise ValueError("expected a UNet with floating-point weights; found none to identify")
    step = max(1, len(names) // SAMPLED_TENSORS)
    chosen = names[::step][:SAMPLED_TENSORS]
    picks = []
    for name in chosen:
        flat = state[name].reshape(-1)
        index = torch.tensor([_position(name, flat.numel(), k) for k in range(VALUES_PER_TENSOR)],
                             device=flat.device)
        picks.append(flat.index_select(0, index).float())
    values = torch.cat(picks).cpu().tolist()
    names_digest = hashlib.sha256(json.dumps(chosen).encode()).hexdigest()[:16]
    return {"version": IDENTITY_VERSION, "tensors": len(names), "names": names_digest,
            "values": [float(f"{v:.5g}") for v in values]}


def short_name(identity: Mapping) -> str:
    """Eight hex digits that name an identity in messages: the signs of its first 32 clearly
    non-zero samples, which no rounding to fp16 or bf16 changes."""
    signs = [v > 0 for v in identity.get("values", []) if abs(v) > 10 * ABSOLUTE_TOLERANCE][:32]
    return f"{sum(bit << i for i, bit in enumerate(signs)):08x}"


def identity_metadata(identity: Mapping | None) -> dict[str, str]:
    """The metadata entry that records ``identity`` in a safetensors file (empty for None)."""
    return {} if identity is None else {META_BASE_CONTENT: json.dumps(dict(identity), separators=(",", ":"))}


def read_identity(metadata: Mapping[str, str] | None) -> dict | None:
    """The identity a file's metadata records, or None (files from other tools, older files)."""
    text = (metadata or {}).get(META_BASE_CONTENT)
    if not text:
        return None
    try:
        identity = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(identity, dict) or identity.get("version") != IDENTITY_VERSION:
        return None
    return identity


def difference(recorded: Mapping, actual: Mapping) -> str | None:
    """None when ``recorded`` and ``actual`` identify the same base weights; otherwise what differs."""
    if recorded.get("tensors") != actual.get("tensors") or recorded.get("names") != actual.get("names"):
        return (f"a base with {recorded.get('tensors')} UNet tensors was recorded; this one has "
                f"{actual.get('tensors')} (or other tensor names)")
    a, b = recorded.get("values", []), actual.get("values", [])
    if len(a) != len(b) or not a:
        return f"{len(a)} sampled weights were recorded; this base gives {len(b)}"
    agreeing = sum(math.isclose(x, y, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE) for x, y in zip(a, b))
    if agreeing >= AGREEING_SHARE * len(a):
        return None
    return f"{len(a) - agreeing} of {len(a)} sampled weights differ"


def mismatch_message(what: str, recorded: Mapping, actual: Mapping, source: str = "") -> str | None:
    """One line for a user: ``what`` (e.g. "extension foo.safetensors") was made for another base
    than the loaded one; None when they match."""
    why = difference(recorded, actual)
    if why is None:
        return None
    made_for = f" ({source})" if source else ""
    return (f"{what} was made for base {short_name(recorded)}{made_for}, but the loaded base is "
            f"{short_name(actual)}: {why}. It loads, but its output may be poor; load it on the base it "
            "was trained on")


__all__ = [
    "META_BASE_CONTENT", "content_identity", "short_name", "identity_metadata", "read_identity", "difference",
    "mismatch_message",
]
