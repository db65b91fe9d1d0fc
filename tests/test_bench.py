"""The benchmark scripts under ``bench/`` at a small size: they run to completion and print what
the README's tables are made of (their numbers belong to the README, not to tests)."""

import importlib.util
import math
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_quality_prints_every_row_and_column(capsys):
    bench = _load("bench_quality")
    assert bench.main(["--frames", "12", "--seeds", "3", "--modes", "progressive", "full_sequence"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    assert header == ["mode", "colour", "drift", "contrast", "drift", "seam", "persistence", "form", "speed",
                      "jitter", "s/video"]
    rows = {line[:28].strip(): [float(v) for v in line[28:].split()] for line in lines[2:6]}
    assert list(rows) == [bench.GROUND_TRUTH, bench.VAE_ROUND_TRIP, "progressive", "full_sequence"]
    # scene 3 is one square: the true frames keep it whole, in its form, moving
    truth = dict(zip(["colour_drift", "contrast_drift", "seam", "persistence", "form", "speed", "jitter"],
                     rows[bench.GROUND_TRUTH]))
    assert truth["persistence"] == 1.0 and truth["form"] == 1.0 and truth["speed"] > 0.3
    assert all(len(values) == 8 and not any(math.isnan(v) for v in values[:4]) for values in rows.values())
    assert lines[-1].startswith("ratio full_sequence / progressive: colour drift ") and "form" in lines[-1]
