"""Samplers with instrumented denoisers: progressive (PA-VDM), full-sequence and replacement.

The recording denoiser used for schedule checks predicts x0 = 0, so a noisy frame k always holds
``frame_noise(seed, k) * sigma`` (Euler toward 0 only rescales it) and a finished frame is 0.
That lets a test tell, from the model input alone, which video frame sits at which window
position and whether it is a clean conditioning frame. Those tests sample in float64: in float32
the rescaling loses digits to cancellation when one step spans a large sigma ratio.
"""

from __future__ import annotations

import pytest
import torch

from longvid_core.networks.conditioning import SVDCond
from longvid_core.progress import SAMPLING, Cancelled
from longvid_core.sampling import (
    DEFAULT_CFG,
    DEFAULT_MIN_CFG,
    EULER,
    StepRule,
    euler_step,
    frame_noise,
    guided_denoise,
    context_windows,
    iter_context_windows,
    iter_full_sequence,
    iter_progressive,
    iter_replacement,
    linear_cfg_ramp,
    plan_context_windows,
    plan_full_sequence,
    plan_progressive,
    pyramid_weights,
    plan_replacement,
    sample_context_windows,
    sample_full_sequence,
    sample_progressive,
    sample_replacement,
)
from longvid_core.sampling.schedules import get_sigmas_karras, progressive_table

B, H, W = 1, 2, 2
FRAME = (B, 4, H, W)
NO_CFG = dict(cfg=1.0, min_cfg=1.0)
F64 = torch.float64


def sigmas64(steps: int) -> torch.Tensor:
    return get_sigmas_karras(steps, dtype=F64)


def make_cond(tag: float, batch: int = B) -> SVDCond:
    """A cond whose embedding and concat latent are filled with ``tag`` (so a test can read it back)."""
    return SVDCond(
        image_embeds=torch.full((batch, 1, 8), float(tag)),
        concat_latent=torch.full((batch, 4, H, W), float(tag)),
        added_time_ids=torch.tensor([[5.0, 127.0, 0.0]]).expand(batch, -1).clone(),
    )


def frame_tags(cond: SVDCond, frames: int) -> list[float]:
    """The tag each of ``frames`` frames receives from ``cond`` (first batch item)."""
    return cond.expand_frames(frames).concat_latent[0, :, 0, 0, 0].tolist()


class Recorder:
    """Denoiser that records every call and predicts ``predict(x, sigma, cond)`` (default 0)."""

    def __init__(self, predict=None):
        self.calls = []
        self.predict = predict or (lambda x, sigma, cond: torch.zeros_like(x))

    def __call__(self, x, sigma, cond):
        assert x.dim() == 5 and sigma.shape == x.shape[:2]
        assert (sigma > 0).all(), "the model must never see sigma = 0"
        self.calls.append((x.clone(), sigma.clone(), cond))
        return self.predict(x, sigma, cond)


def mixing_predict(x, sigma, cond):
    """A deterministic non-trivial denoiser: frames interact and the cond matters."""
    scale = 1.0 / (1.0 + sigma[..., None, None, None])
    context = cond.expand_frames(x.shape[1]).concat_latent
    return torch.tanh(x * scale) + 0.1 * x.mean(dim=1, keepdim=True) * scale + 0.01 * context


def noise_bank(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.stack([frame_noise(seed, k, FRAME, dtype=F64) for k in range(frames)])


def is_clean(x_frame: torch.Tensor) -> bool:
    # A finished frame of the x0 = 0 recorder is 0 up to rounding of x - (x / sigma) * sigma; the
    # smallest noisy frame is about sigma_min * |noise| ~ 1e-4 or more.
    return x_frame.abs().max().item() < 1e-9


def identify(x_frame: torch.Tensor, sigma: float, bank: torch.Tensor) -> int | None:
    """Video frame index of a noisy frame under the x0 = 0 recorder, or None for a clean frame."""
    if is_clean(x_frame):
        return None
    error = (bank - x_frame / sigma).abs().flatten(1).amax(1)
    k = int(error.argmin())
    assert error[k] < 1e-6, "window frame matches no frame's noise"
    return k


def walk_windows(recorder: Recorder, bank: torch.Tensor):
    """Per call: ``[(position, frame index or None if clean, sigma)]`` for the first batch item."""
    for x, sigma, _ in recorder.calls:
        yield [(f, identify(x[0, f], sigma[0, f].item(), bank), sigma[0, f].item()) for f in range(x.shape[1])]


def sigma_sequences(recorder: Recorder, num_frames: int, clean_sigma: float, max_clean: int):
    """Sigmas each frame was evaluated at as a noisy frame; checks clean frames sit in front."""
    seen = {k: [] for k in range(num_frames)}
    for window in walk_windows(recorder, noise_bank(num_frames)):
        clean = [f for f, k, _ in window if k is None]
        assert clean == list(range(len(clean))), "clean conditioning frames sit in front of the window"
        assert len(clean) <= max_clean
        for f, k, sigma in window:
            if k is None:
                assert sigma == clean_sigma
            else:
                seen[k].append(sigma)
    return seen


# ---------------------------------------------------------------------------------------------
# Building blocks


def test_linear_cfg_ramp_pinned():
    assert linear_cfg_ramp(4, 1.0, 2.5).tolist() == [1.0, 1.5, 2.0, 2.5]
    assert (DEFAULT_MIN_CFG, DEFAULT_CFG) == (1.0, 2.5)


def test_euler_step_pinned_and_lands_on_x0():
    x, x0 = torch.ones(1, 1, 1, 1, 1), torch.full((1, 1, 1, 1, 1), 0.5)
    # d = (1 - 0.5) / 2 = 0.25; x + d * (1 - 2) = 0.75
    assert euler_step(x, x0, 2.0, 1.0).item() == 0.75
    per_frame = euler_step(
        torch.ones(1, 2, 1, 1, 1), torch.zeros(1, 2, 1, 1, 1), torch.tensor([2.0, 4.0]), torch.tensor([1.0, 1.0])
    )
    assert per_frame.flatten().tolist() == [0.5, 0.25]
    last = euler_step(torch.tensor([[[[[3.0]]]]]), torch.tensor([[[[[1.25]]]]]), 0.002, 0.0)
    assert last.item() == pytest.approx(1.25)


def test_frame_noise_depends_only_on_seed_stream_and_index():
    a = frame_noise(7, 3, FRAME)
    assert torch.equal(a, frame_noise(7, 3, FRAME))
    assert not torch.equal(a, frame_noise(7, 4, FRAME))
    assert not torch.equal(a, frame_noise(8, 3, FRAME))
    assert not torch.equal(a, frame_noise(7, 3, FRAME, stream=1))
    # Pinned so that a change of seeding (which would change every user's video) fails loudly.
    pinned = [0.1775878, -0.9685014, -1.2859085]
    assert frame_noise(0, 0, (1, 1, 1, 3)).flatten().tolist() == pytest.approx(pinned, abs=1e-6)


def test_guided_denoise_batches_uncond_with_zero_cond_and_scales_per_frame():
    cond = make_cond(3.0, batch=2)
    seen = []

    def denoise(x, sigma, c):
        seen.append((x.shape, sigma.shape, c))
        # x0 = the cond's tag: 3 for the conditional half, 0 for SVD's zero unconditional branch
        return c.concat_latent.mean(dim=(1, 2, 3))[:, None, None, None, None].expand_as(x).clone()

    x = torch.randn(2, 3, 4, H, W)
    sigma = torch.full((2, 3), 5.0)
    scales = torch.tensor([1.0, 1.5, 2.5])
    out = guided_denoise(denoise, x, sigma, cond, scales)
    (x_shape, sigma_shape, batched), = seen
    assert x_shape[0] == 4 and sigma_shape == (4, 3)
    assert batched.concat_latent[:2].eq(3.0).all() and batched.image_embeds[:2].eq(3.0).all()
    assert not batched.concat_latent[2:].any() and not batched.image_embeds[2:].any()
    assert torch.equal(batched.added_time_ids[2:], cond.added_time_ids)
    assert out[0, :, 0, 0, 0].tolist() == pytest.approx([3.0, 4.5, 7.5])
    assert torch.equal(guided_denoise(denoise, x, sigma, cond, None), denoise(x, sigma, cond))


# ---------------------------------------------------------------------------------------------
# Progressive sampler: schedule, length, cost


GRID = [
    (window, chunk, multiple, frames)
    for window, chunk in [(4, 1), (4, 2), (6, 2), (6, 3)]
    for multiple in (1, 2, 3)
    for frames in (1, 3, 7, 13)
]


@pytest.mark.parametrize("window, chunk, multiple, frames", GRID)
def test_progressive_every_frame_walks_the_schedule_once(window, chunk, multiple, frames):
    steps = multiple * window // chunk
    sigmas = sigmas64(steps)
    recorder = Recorder()
    produced = list(iter_progressive(recorder, make_cond(1.0), frames, FRAME, sigmas, window=window, chunk=chunk,
                                     dtype=F64, **NO_CFG))
    assert [k for k, _ in produced] == list(range(frames))
    assert all(latent.shape == FRAME for _, latent in produced)
    seen = sigma_sequences(recorder, frames, sigmas[-2].item(), max_clean=chunk)
    for k in range(frames):
        assert seen[k] == sigmas[:-1].tolist(), f"frame {k}"
    plan = plan_progressive(frames, window=window, chunk=chunk, steps=steps)
    assert len(recorder.calls) == plan.denoiser_calls == len(progressive_table(window, chunk, steps, frames))
    assert sum(x.shape[1] for x, _, _ in recorder.calls) == plan.frame_evaluations
    assert max(x.shape[1] for x, _, _ in recorder.calls) <= window + chunk


def test_progressive_default_cost_per_frame():
    plan = plan_progressive(1024)
    assert plan.steps == 24 and plan.evaluations_per_frame / plan.steps <= 1.1
    assert plan_progressive(1_000_000).evaluations_per_frame / 24 == pytest.approx(26 / 24, rel=1e-4)


def test_progressive_with_guidance_batches_uncond_and_keeps_the_schedule():
    sigmas = get_sigmas_karras(4)
    recorder = Recorder()
    out = sample_progressive(recorder, make_cond(1.0), 5, FRAME, sigmas, window=4, chunk=2)
    assert out.shape == (B, 5, 4, H, W)
    for x, sigma, cond in recorder.calls:
        assert x.shape[0] == 2 * B and torch.equal(x[:B], x[B:]) and torch.equal(sigma[:B], sigma[B:])
        assert not cond.concat_latent[B:].any() and not cond.image_embeds[B:].any()
    assert len(recorder.calls) == plan_progressive(5, window=4, chunk=2, steps=4).denoiser_calls


def test_progressive_skips_uncond_when_every_scale_is_one():
    recorder = Recorder()
    sample_progressive(recorder, make_cond(1.0), 5, FRAME, get_sigmas_karras(4), window=4, chunk=2, **NO_CFG)
    assert all(x.shape[0] == B for x, _, _ in recorder.calls)


@pytest.mark.parametrize("window, chunk, steps, frames", [(4, 2, 4, 5), (6, 3, 4, 7), (4, 2, 8, 4)])
def test_progressive_guidance_ramp_per_frame(window, chunk, steps, frames):
    # Conditional branch predicts x0 = x - sigma (d = 1), unconditional x0 = x (d = 0), so a guided
    # step moves a frame by scale * (sigma_next - sigma); the output reveals the scales used.
    def predict(x, sigma, cond):
        is_cond = cond.expand_frames(x.shape[1]).concat_latent.flatten(2).abs().amax(2).gt(0)
        return x - sigma[..., None, None, None] * is_cond[..., None, None, None]

    sigmas = get_sigmas_karras(steps, dtype=torch.float64)
    out = sample_progressive(Recorder(predict), make_cond(1.0), frames, FRAME, sigmas, window=window, chunk=chunk,
                             cfg=2.5, min_cfg=1.0, dtype=torch.float64)
    table = progressive_table(window, chunk, steps, frames)
    ramp = torch.linspace(1.0, 2.5, chunk + window, dtype=torch.float64)  # clean chunk first, front = min
    for k in range(frames):
        within = k % chunk
        expected = sigmas[0] * frame_noise(0, k, FRAME, dtype=torch.float64)
        for s in range(steps):
            scale = ramp[chunk + table.slot(s) * chunk + within]
            expected = expected + scale * (sigmas[s + 1] - sigmas[s])
        assert torch.allclose(out[:, k], expected, atol=1e-9), f"frame {k}"


# ---------------------------------------------------------------------------------------------
# Determinism and noise


def test_progressive_is_deterministic():
    kwargs = dict(window=4, chunk=2, sigmas=get_sigmas_karras(4))
    a = sample_progressive(Recorder(mixing_predict), make_cond(1.0), 9, FRAME, seed=11, **kwargs)
    b = sample_progressive(Recorder(mixing_predict), make_cond(1.0), 9, FRAME, seed=11, **kwargs)
    c = sample_progressive(Recorder(mixing_predict), make_cond(1.0), 9, FRAME, seed=12, **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def start_noise_seen(recorder: Recorder, sigma_max: float) -> list[torch.Tensor]:
    """Frames at sigma_max in the order they entered (frames enter in video order)."""
    entered = []
    for x, sigma, _ in recorder.calls:
        entered += [x[:, f] for f in range(x.shape[1]) if sigma[0, f].item() == sigma_max]
    return entered


def test_start_noise_of_frame_k_is_the_same_for_every_window_size_and_sampler():
    sigmas = get_sigmas_karras(8)
    frames = 10
    runs = []
    for window, chunk in [(4, 2), (8, 2), (8, 4)]:
        recorder = Recorder()
        sample_progressive(recorder, make_cond(1.0), frames, FRAME, sigmas, window=window, chunk=chunk, seed=5,
                           **NO_CFG)
        runs.append(start_noise_seen(recorder, sigmas[0].item()))
    recorder = Recorder()
    sample_replacement(recorder, make_cond(1.0), frames, FRAME, sigmas, window=6, condition_frames=2, seed=5, **NO_CFG)
    runs.append(start_noise_seen(recorder, sigmas[0].item()))
    recorder = Recorder()
    sample_full_sequence(recorder, make_cond(1.0), frames, FRAME, sigmas, seed=5, **NO_CFG)
    runs.append(start_noise_seen(recorder, sigmas[0].item()))
    for entered in runs:
        assert len(entered) == frames
        for k in range(frames):
            assert torch.equal(entered[k], sigmas[0] * frame_noise(5, k, FRAME))


# ---------------------------------------------------------------------------------------------
# Prefix ("extend this video")


@pytest.mark.parametrize("prefix_frames", [1, 2, 5])
def test_progressive_prefix_is_kept_bit_for_bit(prefix_frames):
    prefix = torch.randn(B, prefix_frames, 4, H, W)
    original = prefix.clone()
    sigmas = get_sigmas_karras(4)
    recorder = Recorder(mixing_predict)
    kwargs = dict(window=4, chunk=2, prefix=prefix)
    produced = list(iter_progressive(recorder, make_cond(1.0), 12, FRAME, sigmas, **kwargs))
    assert [k for k, _ in produced] == list(range(prefix_frames, 12))
    out = sample_progressive(Recorder(mixing_predict), make_cond(1.0), 12, FRAME, sigmas, **kwargs)
    assert out.shape == (B, 12, 4, H, W)
    assert torch.equal(out[:, :prefix_frames], original), "prefix frames in the output are the input, bit for bit"
    assert torch.equal(prefix, original), "the caller's prefix tensor is not modified"
    assert torch.equal(torch.stack([f for _, f in produced], dim=1), out[:, prefix_frames:])
    # The last min(C, P) prefix frames sit clean in front, at the clean sigma, from the first call.
    tail = original[:, -min(2, prefix_frames):]
    for x, sigma, _ in recorder.calls[:4]:
        assert torch.equal(x[:B, : tail.shape[1]], tail) and torch.equal(x[B:, : tail.shape[1]], tail)
        assert (sigma[:, : tail.shape[1]] == sigmas[-2]).all()
    plan = plan_progressive(12, window=4, chunk=2, steps=4, prefix_frames=prefix_frames)
    assert plan.new_frames == 12 - prefix_frames
    assert len(recorder.calls) == plan.denoiser_calls
    assert sum(x.shape[1] for x, _, _ in recorder.calls) == plan.frame_evaluations


def test_progressive_prefix_frames_walk_no_schedule_new_frames_walk_it_once():
    sigmas = sigmas64(6)
    prefix = torch.zeros(B, 3, 4, H, W, dtype=F64)  # zeros read as "clean" to the x0 = 0 recorder
    recorder = Recorder()
    sample_progressive(recorder, make_cond(1.0), 10, FRAME, sigmas, window=6, chunk=2, prefix=prefix, **NO_CFG)
    seen = sigma_sequences(recorder, 10, sigmas[-2].item(), max_clean=2)
    assert all(seen[k] == [] for k in range(3))
    assert all(seen[k] == sigmas[:-1].tolist() for k in range(3, 10))


@pytest.mark.parametrize("iterate, kwargs", [(iter_progressive, dict(window=4, chunk=2)),
                                            (iter_replacement, dict(window=4, condition_frames=2))])
def test_consumer_editing_frames_in_place_does_not_change_the_video(iterate, kwargs):
    sigmas = get_sigmas_karras(4)
    reference = [f for _, f in iterate(Recorder(mixing_predict), make_cond(1.0), 9, FRAME, sigmas, **kwargs)]
    edited = []
    for _, latent in iterate(Recorder(mixing_predict), make_cond(1.0), 9, FRAME, sigmas, **kwargs):
        edited.append(latent.clone())
        latent.mul_(0.0)  # e.g. a decoder that scales latents in place
    assert all(torch.equal(a, b) for a, b in zip(reference, edited))


# ---------------------------------------------------------------------------------------------
# Keyframes


@pytest.mark.parametrize("partitions, lookahead", [(1, False), (2, False), (2, True)])
def test_progressive_keyframes_switch_at_the_stated_frames(partitions, lookahead):
    sigmas = sigmas64(4)
    keyframes = [(7, make_cond(2.0)), (0, make_cond(1.0)), (10, make_cond(3.0))]  # any order
    frames = 14
    recorder = Recorder()
    sample_progressive(recorder, keyframes, frames, FRAME, sigmas, window=4, chunk=2, dtype=F64,
                       partitions=partitions, lookahead=lookahead)
    expected = lambda k: 1.0 if k < 7 else 2.0 if k < 10 else 3.0  # noqa: E731
    bank = noise_bank(frames)
    mixed_windows = 0
    checked = set()
    for x, sigma, cond in recorder.calls:
        tags = frame_tags(cond, x.shape[1])
        indices = [identify(x[0, f], sigma[0, f].item(), bank) for f in range(x.shape[1])]
        first_noisy = next(i for i, k in enumerate(indices) if k is not None)
        video_index = [indices[first_noisy] - first_noisy + f for f in range(x.shape[1])]  # window is contiguous
        assert [k for k in indices if k is not None] == video_index[first_noisy:]
        assert tags == [expected(k) for k in video_index]
        assert not cond.concat_latent[B:].any(), "the unconditional branch gets zeros for every keyframe"
        mixed_windows += len(set(tags)) > 1
        checked.update(video_index)
    assert checked == set(range(frames))
    assert mixed_windows > 0, "some windows hold frames of two keyframes"


@pytest.mark.parametrize(
    "keyframes, message",
    [
        ([], "at least one"),
        ([(3, None)], "must start at frame 0"),
        ([(0, None), (0, None)], "same frame"),
        ([("a", None)], "list of \\(start_frame, SVDCond\\) pairs"),
    ],
)
def test_keyframe_errors(keyframes, message):
    with pytest.raises(ValueError, match=message):
        iter_progressive(Recorder(), keyframes, 4, FRAME, get_sigmas_karras(4), window=4, chunk=2)


def test_keyframe_cond_must_not_be_per_frame():
    per_frame = make_cond(1.0).expand_frames(3)
    with pytest.raises(ValueError, match="per-frame cond"):
        iter_progressive(Recorder(), [(0, per_frame)], 4, FRAME, get_sigmas_karras(4), window=4, chunk=2)


# ---------------------------------------------------------------------------------------------
# Callback: progress and cancel


SAMPLERS = {
    "progressive": (iter_progressive, dict(window=4, chunk=2), plan_progressive),
    "partitioned_lookahead": (iter_progressive, dict(window=4, chunk=2, partitions=2, lookahead=True),
                              plan_progressive),
    "context_windows": (iter_context_windows, dict(length=4, overlap=1), plan_context_windows),
    "replacement": (iter_replacement, dict(window=4, condition_frames=1), plan_replacement),
    "full_sequence": (iter_full_sequence, {}, plan_full_sequence),
}
# With 8 steps: the progressive sampler finishes frames on calls 8, 12, ...; replacement on 8, 16.
CANCEL_AT = {"progressive": 9, "partitioned_lookahead": 17, "replacement": 9, "full_sequence": 5,
             "context_windows": 7}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_callback_reports_progress(name):
    iterate, kwargs, plan_fn = SAMPLERS[name]
    frames = 7
    reports = []
    produced = list(iterate(Recorder(mixing_predict), make_cond(1.0), frames, FRAME, get_sigmas_karras(4),
                            callback=reports.append, **kwargs))
    plan = plan_fn(frames, steps=4, **kwargs)
    assert {r.stage for r in reports} == {SAMPLING}
    assert [r.done for r in reports] == list(range(1, plan.denoiser_calls + 1))
    assert {r.total for r in reports} == {plan.denoiser_calls}
    assert {r.frames_total for r in reports} == {frames}
    assert reports[-1].frames_done == frames
    assert [r.frames_done for r in reports] == sorted(r.frames_done for r in reports)
    assert reports[-1].newest_frame_index == frames - 1
    assert torch.equal(reports[-1].newest_latent, produced[-1][1])
    assert reports[0].newest_latent is None


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("how", ["return_false", "raise"])
def test_callback_cancels_within_one_call(name, how):
    iterate, kwargs, _ = SAMPLERS[name]
    recorder = Recorder(mixing_predict)
    stop = CANCEL_AT[name]

    def callback(progress):
        if progress.done == stop:
            if how == "raise":
                raise Cancelled(SAMPLING, progress.done, progress.frames_done)
            return False
        return None

    produced = []
    with pytest.raises(Cancelled) as info:
        for item in iterate(recorder, make_cond(1.0), 9, FRAME, get_sigmas_karras(8), callback=callback, **kwargs):
            produced.append(item)
    assert len(recorder.calls) == stop, "no denoiser call after the cancel"
    assert info.value.done == stop
    assert info.value.frames_done == len(produced) == {"progressive": 2, "partitioned_lookahead": 2, "replacement": 4,
                                                       "full_sequence": 0, "context_windows": 0}[name]


# ---------------------------------------------------------------------------------------------
# Memory: nothing grows with N


def reachable_state(generator, skip: tuple[type, ...] = ()) -> tuple[int, int]:
    """(tensor bytes, total container length) reachable from a suspended generator's frame,
    following generator delegation, containers and plain objects (not functions, modules or
    objects of the ``skip`` types)."""
    roots = []
    while generator is not None:
        roots.append(generator.gi_frame.f_locals)
        generator = generator.gi_yieldfrom
    return reachable_from(roots, skip)


def reachable_from(roots: list, skip: tuple[type, ...] = ()) -> tuple[int, int]:
    """(tensor bytes, total container length) reachable from ``roots``."""
    seen, storages = set(), set()
    tensor_bytes = container_length = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or callable(obj) or isinstance(obj, skip):  # the denoiser, callbacks, classes
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                tensor_bytes += storage.nbytes()
        elif isinstance(obj, dict):
            container_length += len(obj)
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            container_length += len(obj)
            stack.extend(obj)
        elif type(obj).__module__.startswith("longvid_core") and hasattr(obj, "__dict__"):
            stack.append(vars(obj))
    return tensor_bytes, container_length


def test_progressive_state_does_not_grow_with_the_video():
    frame = (1, 4, 8, 8)
    cond = SVDCond(torch.ones(1, 1, 8), torch.ones(1, 4, 8, 8), torch.zeros(1, 3))
    snapshots = {}
    # Snapshots at the same phase (second frame of a chunk, rolling stage): 40 frames into a
    # 64-frame video, and 40 and 2000 frames into a 2048-frame one (default window, chunk, steps).
    for frames, stops in [(64, (40,)), (2048, (40, 2000))]:
        generator = iter_progressive(lambda x, sigma, c: torch.zeros_like(x), cond, frames, frame)
        for done, (index, _) in enumerate(generator, start=1):
            if done in stops:
                snapshots[(frames, done)] = reachable_state(generator)
        assert index == frames - 1
    frame_bytes = 4 * 8 * 8 * 4
    assert len(set(snapshots.values())) == 1, snapshots
    tensor_bytes, container_length = snapshots[(2048, 2000)]
    # Bounded by the window (24 noisy + 2 clean frames, the last Euler output and the emitted
    # chunk), one small cond and the 25 sigmas; keeping the finished frames would add 2000 KiB.
    assert tensor_bytes <= 2 * (24 + 2) * frame_bytes
    # A handful of per-frame lists (sigmas, scales) and per-step lists (the schedule and its index),
    # none per finished frame.
    assert container_length <= 10 * (24 + 2) + 2 * (24 + 1)


# ---------------------------------------------------------------------------------------------
# Reference samplers


def test_full_sequence_shares_one_sigma_and_ramps_guidance_like_svd():
    sigmas = get_sigmas_karras(4, dtype=torch.float64)
    recorder = Recorder()
    out = sample_full_sequence(recorder, make_cond(1.0), 6, FRAME, sigmas.float(), **NO_CFG)
    assert out.shape == (B, 6, 4, H, W)
    assert len(recorder.calls) == plan_full_sequence(6, steps=4).denoiser_calls == 4
    for i, (x, sigma, _) in enumerate(recorder.calls):
        assert x.shape[1] == 6 and (sigma == sigmas.float()[i]).all()

    def predict(x, sigma, cond):  # d = 1 for the conditional branch, 0 for the unconditional
        is_cond = cond.concat_latent.flatten(1).abs().amax(1).gt(0)
        return x - sigma[..., None, None, None] * is_cond[:, None, None, None, None]

    guided = sample_full_sequence(Recorder(predict), make_cond(1.0), 6, FRAME, sigmas, dtype=torch.float64)
    ramp = torch.linspace(DEFAULT_MIN_CFG, DEFAULT_CFG, 6, dtype=torch.float64)
    for k in range(6):
        expected = sigmas[0] * frame_noise(0, k, FRAME, dtype=torch.float64) - ramp[k] * sigmas[0]
        assert torch.allclose(guided[:, k], expected, atol=1e-9)


def replacement_windows(frames, window, condition, prefix_frames):
    """(first condition frame, condition count, new count) of each window, worked out by hand."""
    done, layout = prefix_frames, []
    while done < frames:
        count = min(condition, done)
        new = min(window - count, frames - done)
        layout.append((done - count, count, new))
        done += new
    return layout


@pytest.mark.parametrize("renoise", [False, True])
@pytest.mark.parametrize(
    "frames, window, condition, prefix_frames", [(11, 5, 2, 0), (4, 5, 2, 0), (9, 4, 1, 3), (9, 6, 3, 1)]
)
def test_replacement_schedule_and_cost(renoise, frames, window, condition, prefix_frames):
    steps, seed = 3, 4
    sigmas = sigmas64(steps)
    prefix = torch.zeros(B, prefix_frames, 4, H, W, dtype=F64) if prefix_frames else None
    recorder = Recorder()
    out = sample_replacement(recorder, make_cond(1.0), frames, FRAME, sigmas, window=window, condition_frames=condition,
                             renoise_condition=renoise, prefix=prefix, seed=seed, dtype=F64, **NO_CFG)
    assert out.shape == (B, frames, 4, H, W)
    plan = plan_replacement(frames, window=window, condition_frames=condition, steps=steps, prefix_frames=prefix_frames)
    assert len(recorder.calls) == plan.denoiser_calls
    assert sum(x.shape[1] for x, _, _ in recorder.calls) == plan.frame_evaluations
    layout = replacement_windows(frames, window, condition, prefix_frames)
    assert len(recorder.calls) == steps * len(layout)
    bank = noise_bank(frames, seed)
    seen = {k: [] for k in range(frames)}
    for i, (x, sigma, _) in enumerate(recorder.calls):
        window_index, step = divmod(i, steps)
        first, count, new = layout[window_index]
        assert x.shape[1] == count + new <= window
        for f in range(count):  # condition frames: finished frames (0 under this recorder)
            if renoise:
                assert sigma[0, f] == sigmas[step]
                eps = frame_noise(seed, first + f, FRAME, stream=1 + window_index * steps + step, dtype=F64)
                assert torch.allclose(x[:, f], sigmas[step] * eps)
            else:
                assert sigma[0, f] == sigmas[-2] and is_clean(x[:, f])
        for f in range(count, count + new):
            k = identify(x[0, f], sigma[0, f].item(), bank)
            assert k == first + f
            seen[k].append(sigma[0, f].item())
    assert all(seen[k] == sigmas[:-1].tolist() for k in range(prefix_frames, frames))
    assert all(seen[k] == [] for k in range(prefix_frames))


def test_replacement_without_noise_holds_condition_frames_clean():
    sigmas = get_sigmas_karras(3)
    recorder = Recorder(mixing_predict)
    out = sample_replacement(recorder, make_cond(1.0), 10, FRAME, sigmas, window=5, condition_frames=2)
    # Windows: frames 0-4, then (3, 4 | 5, 6, 7), then (6, 7 | 8, 9).
    starts = {1: 3, 2: 6}
    for i, (x, sigma, _) in enumerate(recorder.calls):
        window_index = i // 3
        if window_index:
            first = starts[window_index]
            assert torch.equal(x[:B, :2], out[:, first:first + 2]), "condition = finished frames, unchanged"
            assert (sigma[:, :2] == sigmas[-2]).all()


def test_replacement_with_noise_renoises_condition_frames_each_step():
    sigmas = get_sigmas_karras(3)
    recorder = Recorder(mixing_predict)
    out = sample_replacement(recorder, make_cond(1.0), 8, FRAME, sigmas, window=5, condition_frames=2,
                             renoise_condition=True, seed=3)
    previous_eps = None
    for i in range(3, 6):  # second window: condition frames 3, 4
        x, sigma, _ = recorder.calls[i]
        step = i - 3
        assert (sigma[:, :2] == sigmas[step]).all()
        eps = (x[:B, :2] - out[:, 3:5]) / sigmas[step]
        expected = torch.stack([frame_noise(3, k, FRAME, stream=1 + 1 * 3 + step) for k in (3, 4)], dim=1)
        assert torch.allclose(eps, expected, atol=1e-3)
        if previous_eps is not None:
            assert not torch.allclose(eps, previous_eps, atol=1e-2), "fresh noise every step"
        previous_eps = eps


def test_replacement_prefix_is_kept_bit_for_bit():
    prefix = torch.randn(B, 4, 4, H, W)
    original = prefix.clone()
    out = sample_replacement(Recorder(mixing_predict), make_cond(1.0), 9, FRAME, get_sigmas_karras(3), window=4,
                             condition_frames=2, prefix=prefix)
    assert torch.equal(out[:, :4], original) and torch.equal(prefix, original)


# ---------------------------------------------------------------------------------------------
# Errors say what was expected and what was found


def test_context_noise_gives_the_finished_chunk_noised_at_context_sigma_fresh_every_call():
    # x0 = 0 recorder: every finished frame is 0, so the chunk in front must be exactly
    # context_sigma * frame_noise(seed, frame, stream=-1 - call).
    window, chunk, steps, frames, seed = 4, 2, 4, 10, 7
    recorder = Recorder()
    out = sample_progressive(recorder, make_cond(1.0), frames, FRAME, sigmas64(steps), window=window, chunk=chunk,
                             seed=seed, context_sigma=0.25, dtype=F64, **NO_CFG)
    assert out.abs().max().item() < 1e-9
    table = progressive_table(window, chunk, steps, frames)
    seen_clean = 0
    for call, ((x, sigma, _), row) in enumerate(zip(recorder.calls, table)):
        if not row.clean_chunk:
            continue
        first = row.first_chunk * chunk - chunk
        expected = torch.stack([0.25 * frame_noise(seed, first + i, FRAME, stream=-1 - call, dtype=F64)
                                for i in range(chunk)], dim=1)
        assert torch.allclose(x[:, :chunk], expected, atol=1e-12)
        assert (sigma[:, :chunk] == 0.25).all()
        seen_clean += 1
    assert seen_clean >= 3
    # the same frame is noised afresh in each call it sits in front
    fronts = [x[:, :chunk] for (x, _, _), row in zip(recorder.calls, table) if row.clean_chunk]
    assert not torch.allclose(fronts[0], fronts[1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, FRAME, get_sigmas_karras(5), window=4, chunk=2),
         r"steps: expected a multiple of window/chunk"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, FRAME, get_sigmas_karras(4), window=5, chunk=2),
         r"window: expected a multiple of chunk"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, FRAME, torch.tensor([700.0, 1.0])),
         "last value to be 0"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, (1, 4, 2)),
         r"frame_shape: expected \(batch, channels"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 3, FRAME, prefix=torch.zeros(B, 3, 4, H, W)),
         r"num_frames \(3\) is the length of the whole output video including the 3 prefix frames"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, FRAME, prefix=torch.zeros(B, 3, 4, H, 3)),
         r"prefix: expected frames of shape"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 0, FRAME), "num_frames must be a whole number >= 1"),
        (lambda: iter_replacement(Recorder(), make_cond(1.0), 8, FRAME, window=4, condition_frames=4),
         "condition_frames must be between 1 and window - 1 = 3"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, FRAME, clean_sigma=0.0), "clean_sigma must be > 0"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, FRAME, context_sigma=-1.0),
         "context_sigma must be > 0"),
        (lambda: iter_progressive(Recorder(), make_cond(1.0), 8, FRAME, clean_sigma=0.01, context_sigma=0.3),
         "give clean_sigma .* or context_sigma .*, not both"),
    ],
)
def test_errors_are_raised_before_sampling(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Step rules apart from the window walks


def _midpoint(model, x, sigma, sigma_next, frames=None):
    """A two-call rule for the test: Euler to a midpoint sigma, then a step from x to sigma_next
    along the prediction made there."""
    mid = torch.where(sigma_next > 0, (sigma * sigma_next).sqrt(), sigma / 2)
    x_mid = euler_step(x, model(x, sigma), sigma, mid)
    return euler_step(x, model(x_mid, mid), sigma, sigma_next)


MIDPOINT = StepRule("midpoint", _midpoint, model_calls=2)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_a_new_step_rule_is_one_function_and_the_plans_count_its_calls(name):
    iterate, kwargs, plan_fn = SAMPLERS[name]
    recorder, reports = Recorder(mixing_predict), []
    sigmas = get_sigmas_karras(4)
    produced = list(iterate(recorder, make_cond(1.0), 7, FRAME, sigmas, step_rule=MIDPOINT,
                            callback=reports.append, **kwargs))
    plan = plan_fn(7, steps=4, step_rule=MIDPOINT, **kwargs)
    euler_plan = plan_fn(7, steps=4, step_rule=EULER, **kwargs)
    assert len(recorder.calls) == plan.denoiser_calls == 2 * euler_plan.denoiser_calls
    assert plan.frame_evaluations == 2 * euler_plan.frame_evaluations
    assert reports[-1].done == plan.denoiser_calls and [i for i, _ in produced] == list(range(7))
    euler = list(iterate(Recorder(mixing_predict), make_cond(1.0), 7, FRAME, sigmas, **kwargs))
    assert not torch.equal(produced[-1][1], euler[-1][1])  # the rule really changed the steps


# ---------------------------------------------------------------------------------------------
# Training-free rolling: latent partitioning and lookahead (FIFO-Diffusion), context windows


def framewise_predict(x, sigma, cond):
    """Each frame's prediction depends on that frame and its sigma only: the video is then the same
    whichever frames share a call, as long as every frame walks the same sigmas."""
    return torch.tanh(x / (1.0 + sigma[..., None, None, None])) + 0.01 * cond.expand_frames(x.shape[1]).concat_latent


PARTITION_GRID = [(8, 2, 1, 2, False), (8, 2, 1, 2, True), (8, 2, 2, 4, True), (12, 2, 1, 3, True),
                  (6, 3, 2, 2, False), (8, 1, 1, 4, True)]


@pytest.mark.parametrize("window, chunk, multiple, partitions, lookahead", PARTITION_GRID)
@pytest.mark.parametrize("frames, prefix_frames", [(1, 0), (9, 0), (13, 3)])
def test_partitions_and_lookahead_walk_every_sigma_once_in_planned_calls(window, chunk, multiple, partitions,
                                                                         lookahead, frames, prefix_frames):
    steps = multiple * window // chunk
    sigmas = sigmas64(steps)
    prefix = torch.randn(B, prefix_frames, 4, H, W, dtype=F64) if prefix_frames else None
    total = prefix_frames + frames
    layout = dict(window=window, chunk=chunk, prefix=prefix, dtype=F64, **NO_CFG)
    plain = sample_progressive(Recorder(framewise_predict), make_cond(1.0), total, FRAME, sigmas, **layout)
    recorder = Recorder(framewise_predict)
    split = sample_progressive(recorder, make_cond(1.0), total, FRAME, sigmas, partitions=partitions,
                               lookahead=lookahead, **layout)
    torch.testing.assert_close(split, plain, rtol=0, atol=1e-12)  # every frame took exactly the same steps
    plan = plan_progressive(total, window=window, chunk=chunk, steps=steps, prefix_frames=prefix_frames,
                            partitions=partitions, lookahead=lookahead)
    assert len(recorder.calls) == plan.denoiser_calls
    assert sum(x.shape[1] for x, _, _ in recorder.calls) == plan.frame_evaluations
    group = window // partitions
    assert max(x.shape[1] for x, _, _ in recorder.calls) <= (2 * group if lookahead else group) + chunk
    # one call spans 1/P of the levels (twice that with the group ahead); clean frames sit at level S-1
    # (a prefix's clean chunk also sits in front of the first chunks while the window fills)
    level = {v: i for i, v in enumerate(sigmas.tolist())}
    for _, sigma, _ in recorder.calls if not prefix_frames else []:
        levels = [level[v] for v in sigma[0].tolist()]
        assert max(levels) - min(levels) <= (2 if lookahead else 1) * steps // partitions - 1


def test_schedule_per_frame_with_partitions_and_lookahead():
    """With the x0 = 0 recorder: each frame is updated at every sigma of the schedule in order;
    with lookahead it also appears once more per row, as context, at the sigma it holds."""
    sigmas = sigmas64(8)
    recorder = Recorder()
    sample_progressive(recorder, make_cond(1.0), 11, FRAME, sigmas, window=8, chunk=2, partitions=2, lookahead=True,
                       dtype=F64, **NO_CFG)
    seen = sigma_sequences(recorder, 11, sigmas[-2].item(), max_clean=2)
    for k in range(11):
        assert sorted(set(seen[k]), reverse=True) == sigmas[:-1].tolist()
        firsts = [v for i, v in enumerate(seen[k]) if v not in seen[k][:i]]
        assert firsts == sigmas[:-1].tolist(), "the sigmas come in schedule order"


def test_partitions_must_divide_the_window_chunks():
    with pytest.raises(ValueError, match=r"partitions must divide the window's 4 chunks .* use one of \[1, 2, 4\]"):
        iter_progressive(Recorder(), make_cond(1.0), 9, FRAME, get_sigmas_karras(8), window=8, chunk=2, partitions=3)


def test_partitioned_state_does_not_grow_with_the_video():
    frame = (1, 4, 8, 8)
    cond = SVDCond(torch.ones(1, 1, 8), torch.ones(1, 4, 8, 8), torch.zeros(1, 3))
    snapshots = {}
    for frames, stops in [(64, (40,)), (1024, (40, 1000))]:
        generator = iter_progressive(lambda x, sigma, c: torch.zeros_like(x), cond, frames, frame, partitions=3,
                                     lookahead=True)
        for done, (index, _) in enumerate(generator, start=1):
            if done in stops:
                snapshots[(frames, done)] = reachable_state(generator)
    assert len(set(snapshots.values())) == 1, snapshots
    assert snapshots[(1024, 1000)][0] <= 2 * (24 + 2) * 4 * 8 * 8 * 4


def test_context_windows_are_comfyuis_static_standard_windows_with_pyramid_weights():
    assert context_windows(10, 16, 4) == [range(0, 10)]
    assert context_windows(30, 16, 4) == [range(0, 16), range(12, 28), range(14, 30)]  # last moved back
    assert context_windows(40, 16, 4) == [range(0, 16), range(12, 28), range(24, 40)]
    assert pyramid_weights(4) == [1, 2, 2, 1] and pyramid_weights(5) == [1, 2, 3, 2, 1]
    with pytest.raises(ValueError, match="context overlap must be between 0 and the window length - 1 = 3"):
        context_windows(10, 4, 4)


def test_context_windows_hold_the_video_in_host_memory_and_one_window_on_the_device(monkeypatch):
    from longvid_core.sampling.context_windows import _VideoAtOneSigma

    frame = (1, 4, 8, 8)
    frame_bytes = 4 * 8 * 8 * 4
    cond = SVDCond(torch.ones(1, 1, 8), torch.ones(1, 4, 8, 8), torch.zeros(1, 3))
    outside, stores = {}, {}
    # the running generator's own frame is not read (that crashed the interpreter in a full run): the
    # walk and the store are caught as they are used, and what the walk holds is measured from it
    made, original_init = {}, _VideoAtOneSigma.__init__

    def catching_init(self, walk, *args, **kwargs):
        made["store"], made["walk"] = self, walk
        original_init(self, walk, *args, **kwargs)

    monkeypatch.setattr(_VideoAtOneSigma, "__init__", catching_init)
    for frames in (64, 1024):
        seen = []

        def denoise(x, sigma, c):
            seen.append(x.shape[1])
            if len(seen) == 3 * len(context_windows(frames, 16, 4)) + 2:  # mid-step, mid-video
                outside[frames] = reachable_from([vars(made["walk"])], skip=(_VideoAtOneSigma,))
                stores[frames] = made["store"]
            return torch.zeros_like(x)

        generator = iter_context_windows(denoise, cond, frames, frame, length=16, overlap=4)
        assert sum(1 for _ in generator) == frames
        assert max(seen) == 16, "the model's device gets one window per call"
    # Outside the store (the walk, one window's cond and the schedule) nothing grows with the video.
    assert outside[64] == outside[1024], outside
    assert outside[1024][0] <= 2 * 16 * frame_bytes
    # The store is the video in host memory (the default, whatever the model's device is).
    for frames, store in stores.items():
        assert store.device == torch.device("cpu")
        assert store.frames.shape == (1, frames, 4, 8, 8)
        assert all(w.device == store.device for w in store.weights)


def test_context_windows_fuse_every_window_at_every_sigma():
    sigmas = sigmas64(4)
    recorder = Recorder()
    frames = 11
    out = sample_context_windows(recorder, make_cond(1.0), frames, FRAME, sigmas, length=4, overlap=1, dtype=F64,
                                 **NO_CFG)
    windows = context_windows(frames, 4, 1)
    plan = plan_context_windows(frames, length=4, overlap=1, steps=4)
    assert len(recorder.calls) == plan.denoiser_calls == 4 * len(windows)
    assert sum(x.shape[1] for x, _, _ in recorder.calls) == plan.frame_evaluations
    bank = noise_bank(frames)
    for i, (x, sigma, _) in enumerate(recorder.calls):
        window = windows[i % len(windows)]
        assert sigma.unique().tolist() == [sigmas[i // len(windows)].item()]  # every window, every sigma, in order
        assert [identify(x[0, f], sigma[0, f].item(), bank) for f in range(x.shape[1])] == list(window)
    assert out.shape == (B, frames, 4, H, W) and out.abs().max() < 1e-9  # x0 = 0 everywhere: all frames landed


def test_context_windows_fuse_predictions_with_pyramid_weights():
    # every frame of window w is predicted as w + 2: a frame in two windows gets their pyramid-weighted mean
    def predict(x, sigma, cond):
        return torch.full_like(x, float(len(calls) % 3 + 1))

    calls = []
    recorder = Recorder(lambda x, sigma, cond: (calls.append(1), predict(x, sigma, cond))[1])
    out = sample_context_windows(recorder, make_cond(1.0), 10, FRAME, sigmas64(1), length=4, overlap=1, dtype=F64,
                                 **NO_CFG)
    # one step (sigma_max -> 0) lands on the fused prediction; windows (0..4), (3..7), (6..10)
    w = pyramid_weights(4)
    torch.testing.assert_close(out[0, 0], torch.full_like(out[0, 0], 2.0))  # window 0 alone (calls counted first)
    torch.testing.assert_close(out[0, 3], torch.full_like(out[0, 3], (w[3] * 2 + w[0] * 3) / (w[3] + w[0])))


def test_context_windows_condition_each_frame_on_its_keyframe():
    keyframes = [(0, make_cond(1.0)), (5, make_cond(2.0))]
    recorder = Recorder()
    sample_context_windows(recorder, keyframes, 11, FRAME, sigmas64(2), length=4, overlap=1, dtype=F64, **NO_CFG)
    windows = context_windows(11, 4, 1)
    for i, (x, _, cond) in enumerate(recorder.calls):
        window = windows[i % len(windows)]
        assert frame_tags(cond, x.shape[1]) == [1.0 if k < 5 else 2.0 for k in window]
