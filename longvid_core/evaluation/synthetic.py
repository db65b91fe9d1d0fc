"""Synthetic moving-shape videos: the domain of LongVid's small bundled model and its benchmarks.

A scene is a plain background with a few coloured shapes (disc, square, diamond) moving at
constant velocity and bouncing off the borders. Rendering is analytic with soft (anti-aliased)
edges, so frames are smooth in time and the generator knows exactly what should be in every frame
— which the benchmarks use to score shape persistence without any downloaded model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SHAPE_KINDS = ("disc", "square", "diamond")
# Saturated, well separated colours so a shape's pixels can be found again by colour alone.
PALETTE = (
    (0.90, 0.15, 0.15),
    (0.15, 0.75, 0.20),
    (0.20, 0.35, 0.95),
    (0.95, 0.85, 0.10),
    (0.85, 0.20, 0.85),
    (0.10, 0.85, 0.85),
)
BACKGROUNDS = ((0.10, 0.10, 0.12), (0.92, 0.92, 0.90), (0.25, 0.22, 0.35))
# Shape radius as a fraction of the frame's smaller side. At 32x32 (the bundled model's 8x8
# latents) the small end is hard on the VAE: on scenes 100-159 its round trip keeps the outline of
# radius-0.14 shapes in 0.37 of frames, of radius-0.20 shapes in 0.93.
MIN_RADIUS, RADIUS_SPREAD = 0.13, 0.08  # radii in [0.13, 0.21)


@dataclass(frozen=True)
class Shape:
    kind: str
    color: tuple[float, float, float]
    radius: float  # pixels
    x: float  # centre at frame 0, pixels
    y: float
    vx: float  # pixels per frame
    vy: float


@dataclass(frozen=True)
class Scene:
    height: int
    width: int
    background: tuple[float, float, float]
    shapes: tuple[Shape, ...]

    def positions(self, frame: int) -> list[tuple[float, float]]:
        """Centre of every shape at ``frame`` (bouncing = reflection inside [r, size - r])."""
        return [
            (_bounce(s.x + s.vx * frame, s.radius, self.width - s.radius),
             _bounce(s.y + s.vy * frame, s.radius, self.height - s.radius))
            for s in self.shapes
        ]


def _bounce(p: float, lo: float, hi: float) -> float:
    span = hi - lo
    if span <= 0:
        return lo
    q = (p - lo) % (2 * span)
    return lo + (q if q <= span else 2 * span - q)


def random_scene(seed: int, height: int = 64, width: int = 64, max_shapes: int = 3, speed: float = 1.0) -> Scene:
    """A reproducible random scene: 1..max_shapes shapes of distinct colours."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda: torch.rand((), generator=gen).item()  # noqa: E731
    count = 1 + int(rand() * max_shapes)
    colors = torch.randperm(len(PALETTE), generator=gen)[:count].tolist()
    background = BACKGROUNDS[int(rand() * len(BACKGROUNDS))]
    shapes = []
    for c in colors:
        radius = min(height, width) * (MIN_RADIUS + RADIUS_SPREAD * rand())
        angle = 2 * torch.pi * rand()
        v = speed * (0.4 + 0.8 * rand())
        shapes.append(Shape(
            kind=SHAPE_KINDS[int(rand() * len(SHAPE_KINDS))],
            color=PALETTE[c],
            radius=radius,
            x=radius + rand() * (width - 2 * radius),
            y=radius + rand() * (height - 2 * radius),
            vx=v * float(torch.cos(torch.tensor(angle))),
            vy=v * float(torch.sin(torch.tensor(angle))),
        ))
    return Scene(height, width, background, tuple(shapes))


# A shape of radius r covers the pixels whose shape_distance from its centre is below r. The scales
# give the three kinds of one radius nearly the same area (pi, 3.02 and 3.13 r^2).
_DISTANCE_SCALE = {"disc": 1.0, "square": 1.15, "diamond": 0.8}
_AREA_PER_RADIUS_SQUARED = {"disc": torch.pi, "square": 4 / 1.15**2, "diamond": 2 / 0.8**2}


def shape_distance(kind: str, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Distance from a shape's centre in its kind's own norm (disc: L2, square: Linf, diamond: L1)."""
    if kind not in _DISTANCE_SCALE:
        raise ValueError(f"expected a shape kind in {SHAPE_KINDS}; found {kind!r}")
    if kind == "disc":
        dist = torch.sqrt(dx**2 + dy**2)
    elif kind == "square":
        dist = torch.maximum(dx.abs(), dy.abs())
    else:
        dist = dx.abs() + dy.abs()
    return dist * _DISTANCE_SCALE[kind]


def radius_for_area(kind: str, area: float) -> float:
    """The radius at which a shape of ``kind`` covers ``area`` pixels (continuous, no anti-aliasing)."""
    return (max(area, 0.0) / _AREA_PER_RADIUS_SQUARED[kind]) ** 0.5


def pixel_centres(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``xs [1, W]`` and ``ys [H, 1]`` (pixel i covers [i, i+1), centre
    i + 0.5): where shapes are rendered, and so where the metrics measure them."""
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    return xs, ys


def shape_masks(scene: Scene, frame: int, softness: float = 0.75) -> torch.Tensor:
    """Soft coverage ``[S, H, W]`` in 0..1 of every shape at ``frame``."""
    xs, ys = pixel_centres(scene.height, scene.width)
    masks = []
    for shape, (cx, cy) in zip(scene.shapes, scene.positions(frame)):
        dist = shape_distance(shape.kind, xs - cx, ys - cy)
        masks.append(torch.sigmoid((shape.radius - dist) / softness))
    return torch.stack(masks) if masks else torch.zeros(0, scene.height, scene.width)


def shape_areas(scene: Scene, frame: int = 0) -> list[float]:
    """Pixels each shape covers at ``frame`` (coverage > 1/2), for :mod:`longvid_core.evaluation.video_metrics`."""
    return [float((m > 0.5).sum()) for m in shape_masks(scene, frame)]


def _composite(scene: Scene, frames: int, start: int, base: torch.Tensor, paints: list[torch.Tensor]) -> torch.Tensor:
    """Per-pixel values ``[F, H, W, C]``: ``base`` with every shape's ``paint`` laid over it by its
    soft mask, later shapes on top."""
    out = torch.empty(frames, scene.height, scene.width, base.shape[0])
    for i in range(frames):
        img = base.expand(scene.height, scene.width, base.shape[0]).clone()
        for paint, mask in zip(paints, shape_masks(scene, start + i)):
            img = img * (1 - mask[..., None]) + paint * mask[..., None]
        out[i] = img
    return out


def render(scene: Scene, frames: int, start: int = 0) -> torch.Tensor:
    """Frames ``[F, H, W, 3]`` in 0..1 (ComfyUI's IMAGE layout); later shapes are drawn on top."""
    return _composite(scene, frames, start, torch.tensor(scene.background),
                      [torch.tensor(shape.color) for shape in scene.shapes])
