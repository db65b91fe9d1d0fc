"""Schedules: Karras sigmas and the PA-VDM progressive table (pinned numbers and invariants)."""

from __future__ import annotations

import pytest
import torch

from longvid_core.sampling.schedules import (
    DEFAULT_CHUNK,
    DEFAULT_STEPS,
    DEFAULT_WINDOW,
    INITIALIZATION,
    ROLLING,
    TERMINATION,
    check_sigmas,
    get_sigmas_karras,
    progressive_table,
    validate_window,
)

# ---------------------------------------------------------------------------------------------
# Karras sigmas


def test_karras_sigmas_pinned_for_four_steps():
    # (700^(1/7) + i/3 * (0.002^(1/7) - 700^(1/7)))^7 for i = 0..3, then 0: 700^(1/7) = 2.549447,
    # 0.002^(1/7) = 0.411566, so i = 1 gives 1.836820^7 = 70.5408 and i = 2 gives 1.124193^7 = 2.26912.
    sigmas = get_sigmas_karras(4, dtype=torch.float64)
    expected = [700.0, 70.540841511, 2.269116303, 0.002, 0.0]
    assert sigmas.tolist() == pytest.approx(expected, rel=1e-9)
    assert get_sigmas_karras(4).tolist() == pytest.approx(expected, rel=1e-6)
    assert get_sigmas_karras(4).dtype == torch.float32


def test_karras_sigmas_shape_and_range():
    for steps in (1, 2, 24, 50):
        sigmas = get_sigmas_karras(steps)
        assert sigmas.shape == (steps + 1,)
        assert sigmas[0].item() == pytest.approx(700.0)
        assert sigmas[-1].item() == 0.0
        assert check_sigmas(sigmas) == steps
        if steps > 1:
            assert sigmas[-2].item() == pytest.approx(0.002)
    custom = get_sigmas_karras(3, sigma_min=0.1, sigma_max=10.0, rho=1.0, dtype=torch.float64)
    assert custom.tolist() == pytest.approx([10.0, 5.05, 0.1, 0.0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be a positive whole number"),
        (dict(steps=4, sigma_min=1.0, sigma_max=0.5), "expected 0 < sigma_min < sigma_max"),
        (dict(steps=4, rho=0.0), "rho must be > 0"),
    ],
)
def test_karras_sigmas_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_sigmas_karras(**kwargs)


@pytest.mark.parametrize(
    "sigmas, message",
    [
        (torch.tensor([1.0]), "1-D tensor of steps \\+ 1 >= 2 values"),
        (torch.tensor([[1.0, 0.0]]), "1-D tensor"),
        (torch.tensor([2.0, 1.0]), "last value to be 0"),
        (torch.tensor([2.0, 0.0, 0.0]), "every value but the last to be > 0"),
        (torch.tensor([1.0, 2.0, 0.0]), "strictly decreasing"),
    ],
)
def test_check_sigmas_errors(sigmas, message):
    with pytest.raises(ValueError, match=message):
        check_sigmas(sigmas)


# ---------------------------------------------------------------------------------------------
# Window validation


def test_validate_window_accepts_any_multiple_of_window_over_chunk():
    validate_window(DEFAULT_WINDOW, DEFAULT_CHUNK, DEFAULT_STEPS)
    for k in (1, 2, 3):
        validate_window(24, 2, 12 * k)
        validate_window(30, 5, 6 * k)  # the released config's layout (F=30, C=5) at S != F too


@pytest.mark.parametrize(
    "args, message",
    [
        ((5, 2, 4), r"window: expected a multiple of chunk \(2\).*found 5; use window 4 or 6"),
        ((4, 2, 5), r"steps: expected a multiple of window/chunk = 4/2 = 2.*found 5; use steps 4 or 6"),
        ((24, 2, 30), r"steps: expected a multiple of window/chunk = 24/2 = 12.*found 30; use steps 24 or 36"),
        ((24, 2, 6), r"use steps 12"),
        ((0, 2, 4), "window: expected a whole number >= 1, found 0"),
        ((4, 2.5, 4), "chunk: expected a whole number >= 1, found 2.5"),
        ((4, 2, -1), "steps: expected a whole number >= 1, found -1"),
        ((4, 2, 4, 0), "frames: expected at least 1 latent frame to generate, found 0"),
    ],
)
def test_validate_window_says_what_to_change(args, message):
    with pytest.raises(ValueError, match=message):
        validate_window(*args)
    with pytest.raises(ValueError, match=message):
        progressive_table(*args)


# ---------------------------------------------------------------------------------------------
# Progressive table: pinned rows


def _summary(table):
    return [(r.stage, r.first_chunk, r.levels, r.clean_chunk, r.enters, r.emits) for r in table]


def test_progressive_table_pinned_window4_chunk2_steps4():
    # K = 2 chunks, d = 2 steps apart. Canonical table = one full window: chunks 0 and 1.
    table = progressive_table(4, 2, 4)
    assert (table.chunks_per_window, table.chunk_spacing, table.num_chunks, len(table)) == (2, 2, 2, 6)
    assert _summary(table) == [
        (INITIALIZATION, 0, (0,), False, True, False),
        (INITIALIZATION, 0, (1,), False, False, False),
        (ROLLING, 0, (2, 0), False, True, False),
        (ROLLING, 0, (3, 1), False, False, True),
        (TERMINATION, 1, (2,), True, False, False),
        (TERMINATION, 1, (3,), True, False, True),
    ]


def test_progressive_table_pinned_steps_twice_window_over_chunk():
    # S = 8 = 2 * F/C: the case the released linspace(F+1) code cannot do. d = 4.
    table = progressive_table(4, 2, 8)
    assert [r.levels for r in table] == [
        (0,), (1,), (2,), (3,),
        (4, 0), (5, 1), (6, 2), (7, 3),
        (4,), (5,), (6,), (7,),
    ]
    assert [r.stage for r in table] == [INITIALIZATION] * 4 + [ROLLING] * 4 + [TERMINATION] * 4


def test_progressive_table_pinned_short_video_with_prefix():
    # 3 frames in chunks of 2 (the last chunk holds one frame), fewer than the 6-frame window.
    table = progressive_table(6, 2, 3, 3, clean_start=True)
    assert [tuple(table.chunk_frames(m)) for m in range(table.num_chunks)] == [(0, 1), (2,)]
    assert _summary(table) == [
        (INITIALIZATION, 0, (0,), True, True, False),
        (INITIALIZATION, 0, (1, 0), True, True, False),
        (TERMINATION, 0, (2, 1), True, False, True),
        (TERMINATION, 1, (2,), True, False, True),
    ]


# ---------------------------------------------------------------------------------------------
# Progressive table: invariants over a grid


LAYOUTS = [(4, 1), (4, 2), (4, 4), (6, 2), (6, 3), (24, 2)]


@pytest.mark.parametrize("window, chunk", LAYOUTS)
@pytest.mark.parametrize("multiple", [1, 2, 3])
@pytest.mark.parametrize("frames", [1, 3, 5, 13, 40])
@pytest.mark.parametrize("clean_start", [False, True])
def test_progressive_table_invariants(window, chunk, multiple, frames, clean_start):
    k = window // chunk
    steps = multiple * k
    table = progressive_table(window, chunk, steps, frames, clean_start=clean_start)
    d = table.chunk_spacing
    m_total = -(-frames // chunk)
    assert d == steps * chunk // window
    assert table.num_chunks == m_total
    assert len(table) == (m_total + k - 1) * d

    visits = {m: [] for m in range(m_total)}
    stage_order = {INITIALIZATION: 0, ROLLING: 1, TERMINATION: 2}
    previous_stage = 0
    for call, row in enumerate(table):
        assert row.call == call
        assert 1 <= len(row.levels) <= k
        assert all(0 <= level < steps for level in row.levels)
        assert all(a - b == d for a, b in zip(row.levels, row.levels[1:])), "chunks sit d steps apart"
        assert row.clean_chunk == (clean_start or row.first_chunk > 0)
        assert row.enters == (row.levels[-1] == 0)
        assert row.emits == (row.levels[0] == steps - 1)
        assert stage_order[row.stage] >= previous_stage, "stages run initialization -> rolling -> termination"
        previous_stage = stage_order[row.stage]
        if row.stage == ROLLING:
            r = call % d
            assert row.levels == tuple(steps - d + r - j * d for j in range(k))
        for j, (m, level) in enumerate(zip(row.chunks, row.levels)):
            visits[m].append((call, level))
            assert 0 <= table.slot(level) < k
            if len(row.levels) == k:
                assert table.slot(level) == j
    for m, seen in visits.items():
        # Every chunk walks levels 0..S-1 once, one level per call, entering at call m*d.
        assert seen == [(m * d + s, s) for s in range(steps)]
    assert sum(r.emits for r in table) == m_total
    assert sum(r.enters for r in table) == m_total
    if m_total >= k:
        stages = [r.stage for r in table]
        assert stages.count(INITIALIZATION) == (k - 1) * d
        assert stages.count(ROLLING) == (m_total - k + 1) * d
        assert stages.count(TERMINATION) == (k - 1) * d


@pytest.mark.parametrize("window, chunk", LAYOUTS)
@pytest.mark.parametrize("multiple", [1, 2])
def test_canonical_table_is_the_repeating_period(window, chunk, multiple):
    k = window // chunk
    steps = multiple * k
    canonical = progressive_table(window, chunk, steps)
    d = canonical.chunk_spacing
    by_stage = {s: [r.levels for r in canonical if r.stage == s] for s in (INITIALIZATION, ROLLING, TERMINATION)}
    assert [len(by_stage[s]) for s in (INITIALIZATION, ROLLING, TERMINATION)] == [(k - 1) * d, d, (k - 1) * d]
    rolling = by_stage[ROLLING]
    # Initialization uses the highest levels (the back) of the rolling rows, termination the lowest.
    for call, levels in enumerate(by_stage[INITIALIZATION]):
        assert levels == rolling[call % d][-len(levels):]
    for call, levels in enumerate(by_stage[TERMINATION]):
        assert levels == rolling[call % d][: len(levels)]
    long = progressive_table(window, chunk, steps, 10 * window + 1)
    for row in long:
        if row.stage == ROLLING:
            assert row.levels == rolling[row.call % d]


def test_progressive_table_indexing():
    table = progressive_table(24, 2, 24, 2048)
    assert len(table) == (1024 + 12 - 1) * 2
    assert table[-1].call == len(table) - 1 and table[-1].levels == (23,)
    assert [r.call for r in table[3:7]] == [3, 4, 5, 6]
    with pytest.raises(IndexError):
        table[len(table)]
    assert table.slot(0) == 11 and table.slot(23) == 0
