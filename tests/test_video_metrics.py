"""Quality metrics on synthetic videos whose right answers are known."""

from dataclasses import replace

import pytest
import torch

from longvid_core.evaluation.synthetic import (BACKGROUNDS, MIN_RADIUS, PALETTE, RADIUS_SPREAD, SHAPE_KINDS, Scene, Shape,
                                    radius_for_area, random_scene, render, shape_areas)
from longvid_core.evaluation.video_metrics import (drift, frame_differences, seam_score, shape_form, shape_motion,
                                        shape_persistence)


@pytest.fixture(scope="module")
def scene_video():
    scene = random_scene(11, 32, 32, max_shapes=3)
    return scene, render(scene, 60)


def _truth(scene):
    return [s.color for s in scene.shapes], shape_areas(scene)


def test_ground_truth_video_scores_clean(scene_video):
    scene, video = scene_video
    colors, areas = _truth(scene)
    assert shape_persistence(video, colors, areas) == 1.0
    d = drift(video)
    assert d["brightness_drift"] < 0.05 and d["contrast_drift"] < 0.05
    assert seam_score(video, [20, 40]) < 2.0


def test_scene_jump_and_flash_are_seams(scene_video):
    scene, video = scene_video
    jumped = torch.cat([video[:30], render(random_scene(99, 32, 32), 30)])
    assert seam_score(jumped, [30]) > 5.0
    flashed = video.clone()
    flashed[40] = (flashed[40] * 1.6).clamp(0, 1)
    assert seam_score(flashed, [40]) > 3.0


def test_vanishing_shape_breaks_persistence(scene_video):
    scene, video = scene_video
    colors, areas = _truth(scene)
    faded = video.clone()
    faded[30:] = torch.tensor(scene.background)  # everything gone from frame 30
    assert shape_persistence(faded, colors, areas) == pytest.approx(0.5)


def test_persistence_counts_each_shape_and_refuses_smears():
    # three shapes in their own thirds of the frame, moving vertically: they never overlap
    shapes = tuple(Shape(kind, PALETTE[i], 4.0, 5.5 + 10.5 * i, 8.0, 0.0, 0.5)
                   for i, kind in enumerate(("disc", "square", "diamond")))
    scene = Scene(32, 32, BACKGROUNDS[0], shapes)
    video = render(scene, 40)
    colors, areas = _truth(scene)
    assert shape_persistence(video, colors, areas) == 1.0
    recoloured = video.clone()
    near = (video - torch.tensor(colors[0])).abs().amax(dim=-1) <= 0.3
    recoloured[20:][near[20:]] = torch.tensor(scene.background)  # one of three shapes gone after half
    assert shape_persistence(recoloured, colors, areas) == pytest.approx(1 - 0.5 / 3, abs=1e-6)
    smeared = video.clone()
    smeared[:, :, :, :] = torch.tensor(colors[1])  # one colour everywhere: too big, others gone
    assert shape_persistence(smeared, colors, areas) == 0.0
    for metric in (shape_persistence, shape_motion):
        with pytest.raises(ValueError, match="one area per colour"):
            metric(video, colors, areas[:2])


def test_drift_measures_a_known_ramp(scene_video):
    _, video = scene_video
    ramp = (video * 0.5 + torch.linspace(0, 0.3, 60)[:, None, None, None]).clamp(0, 1)
    assert drift(ramp)["brightness_drift"] == pytest.approx(0.3, rel=0.05)


def test_frame_differences_and_errors(scene_video):
    _, video = scene_video
    assert frame_differences(video).shape == (59,)
    with pytest.raises(ValueError, match=r"expected frames \[F>=2, H, W, 3\]"):
        drift(video[0])


def test_shape_motion_measures_speed_and_jitter():
    # one disc moving right at 0.5 px/frame, never touching a border in 20 frames
    scene = Scene(32, 32, BACKGROUNDS[0], (Shape("disc", PALETTE[2], 5.0, 8.0, 16.0, 0.5, 0.0),))
    colors, areas = _truth(scene)
    moving = shape_motion(render(scene, 20), colors, areas)
    assert moving["speed"] == pytest.approx(0.5, abs=0.05) and moving["jitter"] < 0.05
    still = render(scene, 1).expand(20, -1, -1, -1)
    assert shape_motion(still, colors, areas)["speed"] == pytest.approx(0.0, abs=1e-6)
    # in place, one pixel left and right every frame: no progress, all jitter
    wobble = torch.stack([render(scene, 1, start=0)[0] if i % 2 == 0 else render(scene, 1, start=2)[0]
                          for i in range(20)])
    w = shape_motion(wobble, colors, areas)
    assert w["speed"] == pytest.approx(1.0, abs=0.1) and w["jitter"] == pytest.approx(2.0, abs=0.2)
    gone = torch.tensor(scene.background).expand(20, 32, 32, 3).clone()
    assert torch.isnan(torch.tensor(shape_motion(gone, colors, areas)["speed"]))


def test_shape_form_tells_the_three_kinds_apart_and_scores_blurred_corners_low():
    # the three kinds side by side, never overlapping: each is recognised in every frame
    shapes = tuple(Shape(kind, PALETTE[i], 5.0, 5.5 + 10.5 * i, 8.0, 0.0, 0.5)
                   for i, kind in enumerate(SHAPE_KINDS))
    scene = Scene(32, 32, BACKGROUNDS[1], shapes)
    video = render(scene, 30)
    colors, areas = _truth(scene)
    assert shape_form(video, colors, areas, SHAPE_KINDS) == 1.0
    # told the wrong kind for every shape, no pair matches
    assert shape_form(video, colors, areas, ("square", "diamond", "disc")) == 0.0
    # the same scene with every shape drawn as a disc of the same size (what a blurring decoder
    # makes of squares and diamonds): only the real disc keeps its form
    blobs = render(Scene(32, 32, BACKGROUNDS[1], tuple(replace(s_, kind="disc") for s_ in shapes)), 30)
    assert shape_persistence(blobs, colors, areas) == 1.0  # still there, with colour and size ...
    assert shape_form(blobs, colors, areas, SHAPE_KINDS) == pytest.approx(1 / 3)  # ... but two lost form
    # shapes never present count nothing
    gone = torch.tensor(scene.background).expand(30, 32, 32, 3).clone()
    assert torch.isnan(torch.tensor(shape_form(gone, colors, areas, SHAPE_KINDS)))
    with pytest.raises(ValueError, match="one shape kind per colour"):
        shape_form(video, colors, areas, SHAPE_KINDS[:2])
    with pytest.raises(ValueError, match="expected shape kinds in"):
        shape_form(video, colors, areas, ("disc", "square", "star"))


def test_ground_truth_keeps_its_form(scene_video):
    scene, video = scene_video
    colors, areas = _truth(scene)
    assert shape_form(video, colors, areas, [s.kind for s in scene.shapes]) > 0.9


def test_radius_for_area_inverts_the_rendered_area():
    for kind in SHAPE_KINDS:
        scene = Scene(64, 64, BACKGROUNDS[0], (Shape(kind, PALETTE[0], 11.0, 32.0, 32.0, 0.0, 0.0),))
        assert radius_for_area(kind, shape_areas(scene)[0]) == pytest.approx(11.0, rel=0.05)


def test_random_scene_draws_radii_over_its_whole_range():
    radii = [s.radius for seed in range(200) for s in random_scene(seed, 32, 48).shapes]
    # the radius is a fraction of the frame's smaller side (32 here)
    assert min(radii) >= MIN_RADIUS * 32 and max(radii) < (MIN_RADIUS + RADIUS_SPREAD) * 32
    assert max(radii) - min(radii) > 0.8 * RADIUS_SPREAD * 32


def test_ssim_is_one_for_a_copy_and_falls_with_noise_and_blur(scene_video):
    from longvid_core.evaluation.video_metrics import ssim

    video = scene_video[1][:6]
    assert ssim(video, video) == pytest.approx(1.0, abs=1e-12)
    noisy = (video + 0.1 * torch.randn(video.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(video.permute(0, 3, 1, 2), 3, 1, 1).permute(0, 2, 3, 1)
    assert 0 < ssim(noisy, video) < ssim(blurred, video) < 1
    # a constant brightness offset of 0.1 on flat grey: luminance term only, by hand
    flat = torch.full((2, 16, 16, 3), 0.5)
    expected = (2 * 0.5 * 0.6 + 0.01 ** 2) / (0.5 ** 2 + 0.6 ** 2 + 0.01 ** 2)
    assert ssim(flat + 0.1, flat) == pytest.approx(expected, rel=1e-6)  # 0.6 in float32
    with pytest.raises(ValueError, match="two videos of one shape"):
        ssim(video, video[:3])


def test_flicker_counts_brightness_jumps_against_a_reference(scene_video):
    from longvid_core.evaluation.video_metrics import flicker

    video = scene_video[1][:12]
    assert flicker(video, video) == pytest.approx(1.0)
    jumps = torch.tensor([0.05 * (-1) ** k for k in range(12)])[:, None, None, None]
    assert flicker((video + jumps).clamp(0, 1), video) > 3
