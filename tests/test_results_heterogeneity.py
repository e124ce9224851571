"""Issue 34, item 4: heterogeneity.md's MNIST rows (FedAvg, Per-FedAvg FO and HF (hvp) at α_D = 10, 0.3, 0.1, seeds
0–4) and its Fashion-MNIST α_D = 10 row re-made with per-seed CSVs (``perfedavg-reproduce
dirichlet_<data>_alpha<α_D>_tuned … --methods fedavg fo hvp``, ``perfedavg-report … --out
scripts/results/heterogeneity_<data>.md``): every figure of those rows, and the README's MNIST heterogeneity
figures, is re-derived here from the CSVs."""

from __future__ import annotations

import statistics

import pytest
import results_text

from perfedavg.analysis.report import paired_test

ROOT, RESULTS = results_text.ROOT, results_text.RESULTS
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
    return results_text.finals(ROWS[key])


def paired_cell(runs: dict[str, dict[int, float]], method: str, baseline: str) -> str:
    """``+0.0065 [+0.0004, +0.0125], p = 0.041, 5/5``, as heterogeneity.md writes a paired difference."""
    seeds = sorted(runs[baseline])
    diffs = [runs[method][s] - runs[baseline][s] for s in seeds]
    interval, p = paired_test(diffs)
    return f"{statistics.mean(diffs):+.4f} {interval}, p = {p}, {sum(d > 0 for d in diffs)}/{len(diffs)}"


def row_cells(key: tuple[str, str]) -> list[str]:
    runs = finals(key)
    return [
        results_text.mean_sd(runs[FEDAVG]),
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


@pytest.mark.parametrize("key", list(ROWS), ids=" ".join)
def test_the_results_pages_heterogeneity_row_is_the_csvs(key: tuple[str, str]) -> None:
    page = (ROOT / "docs" / "results.md").read_text()
    row = next(line for line in page.splitlines() if line.startswith(f"| {key[0]} | {key[1]} |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    runs = finals(key)
    assert cells[4] == results_text.mean_sd(runs[FEDAVG])
    for cell, method, baseline in zip(cells[5:8], (FO, HF, HF), (FEDAVG, FEDAVG, FO)):
        results_text.check_paired(cell, results_text.differences(runs, method, baseline))
