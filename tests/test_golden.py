"""Speed work changes no result: today's per-round metrics of the reference federations equal the recorded ones.

``tests/golden/metrics.json`` was written by ``python tests/golden_runs.py --write`` from the code before the
speed changes (issue 9). On the machine and torch build that wrote it the comparison is exact (bit for bit); on
another CPU or torch build, whose kernels may round differently, it is to 1e-5 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_runs import GOLDEN, machine, run_all


@pytest.mark.slow
def test_reference_federations_reproduce_the_recorded_metrics(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(tmp_path / "cache"))
    recorded = json.loads(GOLDEN.read_text())
    today = run_all(tmp_path)
    assert set(today) == set(recorded["runs"])
    exact = recorded["machine"] == machine()
    for name, rounds in recorded["runs"].items():
        assert len(today[name]) == len(rounds), name
        for got, want in zip(today[name], rounds):
            assert set(want) <= set(got), name  # every recorded metric is still there (new ones may be added)
            for key, value in want.items():
                if exact:
                    assert got[key] == value, f"{name} round {want['round']} {key}: {got[key]!r} != {value!r}"
                else:
                    assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), f"{name} {key}"
