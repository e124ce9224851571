"""docs/speed.md quotes the benchmark's own tables: every per-mode row it shows is a row of a committed results file
(``scripts/bench_speed.py`` → scripts/results/speed.md, speed_shakespeare.md), and its Shakespeare figures in prose
are those of speed_shakespeare.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
DOC = (ROOT / "docs" / "speed.md").read_text()


def test_every_round_table_row_in_the_doc_is_a_row_of_a_results_file() -> None:
    measured = (RESULTS / "speed.md").read_text() + (RESULTS / "speed_shakespeare.md").read_text()
    rows = [line for line in DOC.splitlines() if re.match(r"\| (fo|fd|hvp) \| [0-9.]+ s \|", line)]
    assert len(rows) >= 8
    for row in rows:
        assert row in measured, row


def span(values: list[float], digits: int) -> str:
    """``a–b`` (or ``a`` where they round alike), as the prose writes a range."""
    low, high = f"{min(values):.{digits}f}", f"{max(values):.{digits}f}"
    return low if low == high else f"{low}–{high}"


def test_the_shakespeare_prose_quotes_the_results_file() -> None:
    measured = (RESULTS / "speed_shakespeare.md").read_text()
    section = " ".join(DOC.split("## Shakespeare", 1)[1].split("\n## ", 1)[0].split())
    rates = re.findall(r"\| (fo|fd) \| [0-9,]+ \| ([0-9,]+)/s \| ([0-9,]+)/s \|", measured)
    assert [mode for mode, _, _ in rates] == ["fo", "fd"]
    for mode, plain, pool in rates:
        assert f"{mode} {pool}/s" in section and f"{plain}/s" in section, (mode, plain, pool)
    runs = re.findall(
        r"\| (?:fo|fd) \| (in-process, 2 workers|Ray) \| ([0-9.]+) s \(43 clients\) \| ([0-9.]+) s \| "
        r"([0-9.]+) GB",
        measured,
    )
    assert len(runs) == 4
    for backend, words in (("in-process, 2 workers", "in-process"), ("Ray", "with Ray")):
        mine = [r for r in runs if r[0] == backend]
        assert f"{span([float(r[3]) for r in mine], 2)} GB {words}" in section, backend
        assert f"{span([float(r[1]) for r in mine], 0)} s" in section, backend
        assert f"{span([float(r[2]) for r in mine], 1)} s" in section, backend
