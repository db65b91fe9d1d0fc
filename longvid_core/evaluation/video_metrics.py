"""Long-video quality metrics that need no downloaded weights (used by ``bench/bench_quality.py``).

All take frames ``[F, H, W, 3]`` in 0..1.

- :func:`drift` — per-frame colour (mean) and contrast (standard deviation) fitted with a line
  over time; the slope times the length is how far they drifted over the video. Users of
  autoregressive long-video tools report colour/contrast creeping up with every extension.
- :func:`seam_score` — frame-to-frame differences at window boundaries relative to the median
  difference: 1 means boundaries are as smooth as anywhere else; spikes (seams, flashes, scene
  jumps) score high.
- :func:`shape_persistence` — for synthetic scenes (``longvid_core.evaluation.synthetic``), the fraction of
  (shape, frame) pairs in which a shape of the first frame is still present with its colour and
  roughly its size: the generator knows what should be in the frame.
- :func:`shape_form` — of those present shapes, the fraction whose pixels look more like their own
  kind (disc, square, diamond) than like the other two: a square that turns into a round blob is
  there (persistence) but has lost its form.
- :func:`shape_motion` — how fast each shape's centre (of its colour's pixels) moves, and how
  jerkily: a shape that stays put scores speed 0, one that wobbles in place has jitter close to
  its speed. Bounces and shapes passing behind one another give true motion some jitter too, so
  compare with the generator's own continuation (``bench/bench_quality.py`` prints it).
- :func:`ssim` — mean structural similarity of two videos frame by frame (Wang et al. 2004, 11x11
  Gaussian window of sigma 1.5, on the grey level), for refine and guide benches.
- :func:`flicker` — mean absolute change of each frame's grey level from the frame before, over
  the same in a reference video: 1 is as steady as the reference, above 1 flickers more.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .synthetic import SHAPE_KINDS, pixel_centres, radius_for_area, shape_distance


def _check_frames(frames: torch.Tensor) -> torch.Tensor:
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"expected frames [F>=2, H, W, 3] in 0..1; found {tuple(frames.shape)}")
    return frames.float()


def _slope(values: torch.Tensor) -> float:
    t = torch.arange(values.shape[0], dtype=torch.float64)
    t = t - t.mean()
    v = values.double() - values.double().mean()
    return float((t * v).sum() / (t * t).sum())


def drift(frames: torch.Tensor) -> dict[str, float]:
    """Colour and contrast drift over the whole video (slope per frame × number of frames)."""
    frames = _check_frames(frames)
    n = frames.shape[0]
    mean = frames.mean(dim=(1, 2, 3))
    contrast = frames.flatten(1).std(dim=1)
    channel_means = frames.mean(dim=(1, 2))  # [F, 3]
    colour = max(abs(_slope(channel_means[:, c])) for c in range(3))
    return {
        "brightness_drift": abs(_slope(mean)) * n,
        "colour_drift": colour * n,
        "contrast_drift": abs(_slope(contrast)) * n,
    }


def frame_differences(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between consecutive frames, ``[F-1]`` (entry i: frame i -> i+1)."""
    frames = _check_frames(frames)
    return (frames[1:] - frames[:-1]).abs().mean(dim=(1, 2, 3))


def seam_score(frames: torch.Tensor, boundaries: Sequence[int]) -> float:
    """Mean frame difference entering each boundary frame, over the median difference.

    ``boundaries``: frame indices where a new window's frames start (difference from frame b-1 to
    b). With no boundaries (one pass), the largest spike over the median is reported instead.
    """
    diffs = frame_differences(frames)
    median = diffs.median().clamp_min(1e-8)
    picked = [diffs[b - 1] for b in boundaries if 1 <= b < frames.shape[0]]
    if not picked:
        return float(diffs.max() / median)
    return float(torch.stack(picked).mean() / median)


def shape_persistence(frames: torch.Tensor, colors: Sequence[Sequence[float]], areas: Sequence[float],
                      tolerance: float = 0.3, keep: float = 0.5) -> float:
    """Fraction of (shape, frame) pairs in which the shape is present with its colour and roughly its size.

    Present: between ``keep`` × and ``1/keep`` × its first-frame area (pixels, e.g.
    ``synthetic.shape_areas``) is within ``tolerance`` (max channel difference) of its colour — so a
    shape that fades, changes colour, shrinks, smears or grows is missing. Averaged per shape rather
    than "all shapes in a frame" so that one shape briefly hidden behind another costs only its own
    share (a ground-truth continuation still scores a little below 1 when shapes overlap)."""
    frames = _check_frames(frames)
    present = [shape_present for _, shape_present in _colour_masks(frames, colors, areas, tolerance, keep)]
    return float(torch.stack(present).float().mean())


def _colour_masks(frames: torch.Tensor, colors, areas, tolerance: float, keep: float):
    """Per shape: pixels near its colour ``[F, H, W]`` and whether it is present ``[F]``."""
    if len(colors) != len(areas) or not colors:
        raise ValueError(f"expected one area per colour (at least one shape); found {len(colors)} colours, "
                         f"{len(areas)} areas")
    for color, area in zip(colors, areas):
        near = (frames - torch.tensor(color)).abs().amax(dim=-1) <= tolerance
        count = near.flatten(1).sum(dim=1).float()
        yield near, (count >= keep * area) & (count <= area / keep)


def _centres(near: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel count ``[F]`` and centre ``x, y`` ``[F]`` (pixel centres at +0.5, as the generator
    renders them) of the masks ``near`` ``[F, H, W]``; an empty mask's centre is 0."""
    weight = near.float()
    count = weight.sum(dim=(1, 2))
    xs, ys = pixel_centres(near.shape[1], near.shape[2])
    total = count.clamp_min(1)
    return count, (weight * xs).sum(dim=(1, 2)) / total, (weight * ys).sum(dim=(1, 2)) / total


def shape_form(frames: torch.Tensor, colors: Sequence[Sequence[float]], areas: Sequence[float],
               kinds: Sequence[str], tolerance: float = 0.3, keep: float = 0.5) -> float:
    """Fraction of present (shape, frame) pairs (as in :func:`shape_persistence`) whose colour's
    pixels match the shape's own kind best: each kind's outline of the same pixel count, centred
    on those pixels' centre, is compared by intersection over union, and the shape's own kind must
    score strictly highest. Shapes partly hidden behind another lose form too, and a small disc
    on some pixel offsets is a few pixels' worth of square, so the ground truth scores a little
    below 1 (0.94-1 on 32x32 scenes). NaN if no shape is ever present."""
    frames = _check_frames(frames)
    if len(kinds) != len(colors):
        raise ValueError(f"expected one shape kind per colour; found {len(kinds)} kinds, {len(colors)} colours")
    xs, ys = pixel_centres(frames.shape[1], frames.shape[2])
    matched, counted = 0, 0
    for kind, (near, present) in zip(kinds, _colour_masks(frames, colors, areas, tolerance, keep)):
        if kind not in SHAPE_KINDS:
            raise ValueError(f"expected shape kinds in {SHAPE_KINDS}; found {kind!r}")
        near = near[present]
        if not near.shape[0]:
            continue
        count, cx, cy = _centres(near)
        cx, cy = cx[:, None, None], cy[:, None, None]
        iou = {}
        for k in SHAPE_KINDS:
            radius = torch.tensor([radius_for_area(k, float(c)) for c in count])[:, None, None]
            outline = shape_distance(k, xs - cx, ys - cy) < radius
            iou[k] = (outline & near).flatten(1).sum(1) / (outline | near).flatten(1).sum(1).clamp_min(1)
        others = torch.stack([iou[k] for k in SHAPE_KINDS if k != kind]).amax(dim=0)
        matched += int((iou[kind] > others).sum())
        counted += int(count.numel())
    return matched / counted if counted else float("nan")


def shape_motion(frames: torch.Tensor, colors: Sequence[Sequence[float]], areas: Sequence[float],
                 tolerance: float = 0.3, keep: float = 0.5) -> dict[str, float]:
    """Mean ``speed`` (px/frame, centre displacement between consecutive frames) and ``jitter``
    (px/frame^2, mean size of the centre's second difference) of the shapes, over the frames in
    which a shape is present (as in :func:`shape_persistence`). Shapes never present count
    nothing; with no measurable shape at all both are NaN."""
    frames = _check_frames(frames)
    speeds, jitters = [], []
    for near, present in _colour_masks(frames, colors, areas, tolerance, keep):
        _, cx, cy = _centres(near)
        centre = torch.stack([cx, cy], dim=-1)
        step = centre[1:] - centre[:-1]
        both = present[1:] & present[:-1]
        speeds.append(step.norm(dim=-1)[both])
        three = both[1:] & both[:-1]
        jitters.append((step[1:] - step[:-1]).norm(dim=-1)[three])
    speed, jitter = torch.cat(speeds), torch.cat(jitters)
    return {"speed": float(speed.mean()) if speed.numel() else float("nan"),
            "jitter": float(jitter.mean()) if jitter.numel() else float("nan")}


def _grey(frames: torch.Tensor) -> torch.Tensor:
    return (frames.double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)).sum(-1)  # [F, H, W]


def ssim(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean SSIM of ``frames`` against ``reference`` (both ``[F, H, W, 3]`` in 0..1): per frame the
    mean over the image of SSIM with an 11x11 Gaussian window (sigma 1.5; smaller images use a window
    of their size), constants (0.01)^2 and (0.03)^2, then the mean over frames."""
    frames, reference = _check_frames(frames), _check_frames(reference)
    if frames.shape != reference.shape:
        raise ValueError(f"expected two videos of one shape; found {tuple(frames.shape)} and {tuple(reference.shape)}")
    x, y = _grey(frames)[:, None], _grey(reference)[:, None]
    size = min(11, x.shape[-2], x.shape[-1])
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-offsets ** 2 / (2 * 1.5 ** 2))
    line /= line.sum()
    window = (line[:, None] * line[None, :])[None, None]

    def blur(image):
        return torch.nn.functional.conv2d(image, window)

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x ** 2, blur(y * y) - mu_y ** 2
    covariance = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * covariance + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(index.mean())


def flicker(frames: torch.Tensor, reference: torch.Tensor) -> float:
    """How much more ``frames``' overall brightness jumps from frame to frame than ``reference``'s."""
    steps = _grey(_check_frames(frames)).mean(dim=(1, 2)).diff().abs().mean()
    reference_steps = _grey(_check_frames(reference)).mean(dim=(1, 2)).diff().abs().mean()
    return float(steps / reference_steps.clamp_min(1e-8))
