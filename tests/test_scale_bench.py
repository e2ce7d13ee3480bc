"""``care bench scale``: every CPU stage at two corpus sizes, with time, memory and growth."""

from __future__ import annotations

import pandas as pd
import pytest
from care.bench.scale import Measure, growth_per_4x, report


def test_growth_is_expressed_per_4x():
    assert growth_per_4x(1.0, 4.0, 1, 4) == pytest.approx(4.0)
    assert growth_per_4x(1.0, 4.0, 1, 2) == pytest.approx(16.0)  # quadratic from 1x to 2x
    assert growth_per_4x(2.0, 8.0, 4, 16) == pytest.approx(4.0)


def test_report_flags_superlinear_stages_and_a_slow_round_trip(capsys):
    measures = [
        Measure("sheet export", 1, 100, 1.0, 1.0, 10.0),
        Measure("sheet export", 4, 400, 20.0, 16.0, 40.0),
        Measure("sheet import", 1, 100, 1.0, 1.0, 10.0),
        Measure("sheet import", 4, 400, 4.0, 4.0, 40.0),
    ]
    failures = report(measures, max_growth=4.5, round_trip_s=10.0)
    out = capsys.readouterr().out
    assert any(f.startswith("sheet export: grows 16.00x") for f in failures)
    assert not any(f.startswith("sheet import") for f in failures)
    assert "round trip at 4x (400 sessions; export + import): 20.0 s CPU" in out
    assert any("round trip" in f for f in failures)


@pytest.mark.slow
def test_bench_runs_every_stage(tmp_path):
    from care.cli import main

    out = tmp_path / "scale.csv"
    argv = ["bench", "scale", "--scales", "1", "2", "--clients", "6", "--resamples", "20"]
    assert main([*argv, "--workdir", str(tmp_path / "w"), "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert set(table["scale"]) == {1, 2} and (table["cpu_s"] > 0).all()
    assert {"validate", "sheet export", "sheet import", "table2 + bootstrap"} <= set(table["stage"])
    assert (tmp_path / "w/x2/rationales.parquet").exists()
