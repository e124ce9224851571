"""The benchmark scripts run and print what they measured (their figures are quoted in docs/ and
scripts/results/, so a script that silently broke would leave those stale)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_scale_measures_each_size_and_backend_it_is_given(tmp_path: Path) -> None:
    out_file = tmp_path / "scale.md"
    args = [sys.executable, str(ROOT / "scripts" / "bench_scale.py"), "--sizes", "4,12", "--backends", "inprocess"]
    args += ["--sampled", "2", "--rounds", "2", "--out", str(out_file)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in out_file.read_text().splitlines() if line.startswith("| 4 |") or line.startswith("| 12 |")]
    assert len(rows) == 2 and all("failed" not in r for r in rows), rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        sampled, startup, round_s, work_s = int(cells[2]), *map(float, cells[3:6])
        assert sampled == 2 and startup > 0 and round_s > 0 and 0 < work_s <= round_s + 0.05, row
    assert (tmp_path / "scale.png").stat().st_size > 10_000
    bad = subprocess.run([*args[:2], "--sizes", "4,x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--sizes=4,x" in bad.stderr and "Traceback" not in bad.stderr


def test_bench_pickup_finds_every_message_both_ways() -> None:
    """The pickup benchmark's two ways find the same messages (it asserts so) and it prints a row per size."""
    args = [sys.executable, str(ROOT / "scripts" / "bench_pickup.py"), "--sizes", "20,200", "--messages", "10"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| 20 | " in done.stdout and "| 200 | " in done.stdout and " ms |" in done.stdout
