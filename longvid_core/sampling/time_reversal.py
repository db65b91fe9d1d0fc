"""Time Reversal Fusion for guide frames (Feng et al., "Explorative Inbetweening of Time and Space",
ECCV 2024, arXiv 2403.14611, Sec. 3): make the frames *before* a guide head for it.

Latent replacement (:mod:`.guides`) holds a guide frame exactly but, in a window that runs forward
from its conditioning image, the frames before the guide hardly feel it. SVD conditions a clip on
its first frame, so a clip run backwards from the guide (the frame order flipped, the guide's own
picture as the conditioning image: its CLIP embedding and its concat latent) predicts frames that
lead into the guide. Every step, for a call whose noisy frames hold an *anchor* (a strength-1 guide
that carries its picture's cond), the window up to the anchor is denoised a second time reversed,
and the two predictions are fused with a weight that moves linearly from the forward path at the
window's front to the backward path at the anchor (TRF's linear fusion; its stochastic re-noising
rounds are not used). Frames after the anchor keep the forward prediction.

It runs where one call holds its frames at one level (``full_sequence``, the replacement modes); a
reversed progressive window would put its noisiest frames first, which such weights never saw.
Each such step costs one more call on ``anchor - front + 1`` frames, which the plans count
(:func:`anchor_in`).
"""

from __future__ import annotations

from typing import Mapping

import torch


def anchor_in(anchors: Mapping[int, object], first_frame: int, count: int) -> int | None:
    """The last anchor frame among the noisy frames ``first_frame .. first_frame + count - 1`` that
    has at least one of them before it (a backward path needs frames to lead in), or None."""
    found = [frame for frame in anchors if first_frame < frame < first_frame + count]
    return max(found) if found else None


def forward_weights(count: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Weight of the forward prediction at window positions ``0 .. count - 1``: 1 at the front,
    falling linearly to 0 at the anchor (the last position)."""
    return torch.linspace(1.0, 0.0, count, dtype=torch.float64).to(device=device, dtype=dtype)


def fuse(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """``forward`` prediction ``[B, F, ...]`` fused with the ``backward`` one over its first
    ``backward.shape[1]`` positions (already in forward order)."""
    count = backward.shape[1]
    weights = forward_weights(count, forward.dtype, forward.device)[None, :, None, None, None]
    out = forward.clone()
    out[:, :count] = torch.lerp(backward, forward[:, :count], weights)
    return out


__all__ = ["anchor_in", "forward_weights", "fuse"]
