"""Issue 34, item 4: heterogeneity.md's MNIST rows (FedAvg, Per-FedAvg FO and HF (hvp) at α_D = 10, 0.3, 0.1, seeds
0–4) and its Fashion-MNIST α_D = 10 row re-made with per-seed CSVs (``perfedavg-reproduce
dirichlet_<data>_alpha<α_D>_tuned … --methods fedavg fo hvp``, ``perfedavg-report … --out
scripts/results/heterogeneity_<data>.md``): every figure of those rows, and the README's MNIST heterogeneity
figures, is re-derived here from the CSVs."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from perfedavg.analysis.report import paired_test

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
#: (data set as the tables name it, α_D) → the CSV the report wrote (its sweeps numbered in the command's order)
ROWS = {
    ("MNIST", "10"): "heterogeneity_mnist_1_runs.csv",
    ("MNIST", "0.3"): "heterogeneity_mnist_2_runs.csv",
    ("MNIST", "0.1"): "heterogeneity_mnist_3_runs.csv",
    ("Fashion-MNIST", "10"): "heterogeneity_fashion_mnist_1_runs.csv",
}
FEDAVG, FO, HF = "FedAvg", "Per-FedAvg (FO)", "Per-FedAvg (HF, hvp)"


def finals(key: tuple[str, str]) -> dict[str, dict[int, float]]:
    """method → seed → final personalized test accuracy of one (data set, α_D)."""
    out: dict[str, dict[int, float]] = {}
    with (RESULTS / ROWS[key]).open() as f:
        for row in csv.DictReader(f):
            out.setdefault(row["method"], {})[int(row["seed"])] = float(row["eval/personalized_acc"])
    return out


def paired_cell(runs: dict[str, dict[int, float]], method: str, baseline: str) -> str:
    """``+0.0065 [+0.0004, +0.0125], p = 0.041, 5/5``, as heterogeneity.md writes a paired difference."""
    seeds = sorted(runs[baseline])
    diffs = [runs[method][s] - runs[baseline][s] for s in seeds]
    interval, p = paired_test(diffs)
    return f"{statistics.mean(diffs):+.4f} {interval}, p = {p}, {sum(d > 0 for d in diffs)}/{len(diffs)}"


def row_cells(key: tuple[str, str]) -> list[str]:
    runs = finals(key)
    fedavg = list(runs[FEDAVG].values())
    return [
        f"{statistics.mean(fedavg):.4f} ± {statistics.stdev(fedavg):.4f}",
        paired_cell(runs, FO, FEDAVG),
        paired_cell(runs, HF, FEDAVG),
        paired_cell(runs, HF, FO),
    ]


@pytest.mark.parametrize("key", list(ROWS), ids=" ".join)
def test_every_run_finished_on_all_five_seeds(key: tuple[str, str]) -> None:
    runs = finals(key)
    assert set(runs) == {FEDAVG, FO, HF}
    for method, by_seed in runs.items():
        assert sorted(by_seed) == [0, 1, 2, 3, 4], (key, method)


@pytest.mark.parametrize("key", list(ROWS), ids=" ".join)
def test_the_heterogeneity_table_row_is_the_csvs(key: tuple[str, str]) -> None:
    table = (RESULTS / "heterogeneity.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith(f"| {key[0]} | {key[1]} |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    fedavg, fo, hf, hf_fo = row_cells(key)
    assert cells[3:6] == [fedavg, fo, hf], (key, cells[3:6], [fedavg, fo, hf])
    assert cells[8] == hf_fo, (key, cells[8], hf_fo)


def test_the_readme_quotes_the_csvs() -> None:
    """README "Results in short": MNIST Dirichlet(0.3) FO − FedAvg, Dirichlet(0.1) FO − FedAvg and HF − FedAvg."""
    readme = " ".join((ROOT / "README.md").read_text().split()).replace("−", "-")
    for level, method in (("0.3", FO), ("0.1", FO), ("0.1", HF)):
        runs = finals(("MNIST", level))
        diffs = [runs[method][s] - runs[FEDAVG][s] for s in sorted(runs[FEDAVG])]
        quoted = f"{statistics.mean(diffs):+.4f}, {sum(d > 0 for d in diffs)}/{len(diffs)}"
        assert quoted in readme, (level, method, quoted)


def quoted_parts_agree(cell: str, runs: dict[str, dict[int, float]], method: str, baseline: str) -> None:
    """A results-page cell such as ``−0.0018, 1/5`` or ``+0.0065 [+0.0004, +0.0125], 5/5`` or ``… p = 0.10``:
    each part it quotes equals the CSVs' (the mean always; the interval, p and seeds ahead where quoted)."""
    seeds = sorted(runs[baseline])
    diffs = [runs[method][s] - runs[baseline][s] for s in seeds]
    interval, p = paired_test(diffs)
    cell = cell.replace("−", "-")
    assert cell.startswith(f"{statistics.mean(diffs):+.4f}"), (cell, statistics.mean(diffs))
    if "[" in cell:
        assert interval in cell, (cell, interval)
    if "p = " in cell:
        assert float(cell.split("p = ")[1].split(",")[0]) == pytest.approx(float(p), abs=0.005), (cell, p)
    if "/5" in cell:
        assert cell.endswith(f"{sum(d > 0 for d in diffs)}/{len(diffs)}"), cell


@pytest.mark.parametrize("key", list(ROWS), ids=" ".join)
def test_the_results_pages_heterogeneity_row_is_the_csvs(key: tuple[str, str]) -> None:
    page = (ROOT / "docs" / "results.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith(f"| {key[0]} | {key[1]} |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    runs = finals(key)
    fedavg = list(runs[FEDAVG].values())
    assert cells[4] == f"{statistics.mean(fedavg):.4f} ± {statistics.stdev(fedavg):.4f}"
    quoted_parts_agree(cells[5], runs, FO, FEDAVG)
    quoted_parts_agree(cells[6], runs, HF, FEDAVG)
    quoted_parts_agree(cells[7], runs, HF, FO)
