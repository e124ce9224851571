"""Issue 34, item 2: Fashion-MNIST Dirichlet(0.1) with HF re-tuned on three confirmation seeds, then ten seeds on two
arithmetic paths (the machine's default and ``ATEN_CPU_CAPABILITY=avx2``). The text in docs/results.md and the
README is re-derived here from the committed per-seed CSVs (``perfedavg-report … --against "Per-FedAvg (FO)"``)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from perfedavg.analysis.report import paired_test

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"
STEM = "fashion_mnist_dirichlet0.1_hf_retuned"
PATHS = {"default": RESULTS / f"{STEM}_1_runs.csv", "avx2": RESULTS / f"{STEM}_2_runs.csv"}
FO, HF = "Per-FedAvg (FO)", {"hvp": "Per-FedAvg (HF, hvp)", "fd": "Per-FedAvg (HF, fd)"}
CHANCE = 1.5 / 10  # the tuner's and the stability check's collapse line for 10 classes


def finals(path: Path) -> dict[str, dict[int, float]]:
    """method → seed → final personalized test accuracy."""
    out: dict[str, dict[int, float]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            out.setdefault(row["method"], {})[int(row["seed"])] = float(row["eval/personalized_acc"])
    return out


def comparison(path: Path, mode: str) -> str:
    """``+0.0060 [+0.0044, +0.0077], 10/10``: HF − FO on the same seeds, its 95 % interval, seeds ahead."""
    runs = finals(path)
    diffs = [runs[HF[mode]][s] - runs[FO][s] for s in sorted(runs[FO])]
    interval, _ = paired_test(diffs)
    ahead = sum(d > 0 for d in diffs)
    return f"{sum(diffs) / len(diffs):+.4f} {interval}, {ahead}/{len(diffs)}"


@pytest.mark.parametrize("path", list(PATHS))
def test_every_seed_of_every_method_finished_above_chance_on_both_paths(path: str) -> None:
    runs = finals(PATHS[path])
    assert set(runs) == {FO, *HF.values()}
    for method, by_seed in runs.items():
        assert sorted(by_seed) == list(range(10)), (path, method)
        assert min(by_seed.values()) > CHANCE, (path, method, by_seed)


def test_the_two_paths_are_different_arithmetic() -> None:
    """avx2 really took another path: the same seeds end at different bits (so agreeing conclusions mean something)."""
    default, avx2 = finals(PATHS["default"]), finals(PATHS["avx2"])
    assert any(default[m][s] != avx2[m][s] for m in default for s in default[m])


def test_the_results_page_quotes_the_csvs() -> None:
    page = " ".join((ROOT / "docs" / "results.md").read_text().split()).replace("−", "-").replace("**", "")
    for path in PATHS:
        for mode in HF:
            assert comparison(PATHS[path], mode) in page, (path, mode, comparison(PATHS[path], mode))


def test_the_readme_quotes_the_csvs() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split()).replace("−", "-").replace("**", "")
    assert comparison(PATHS["default"], "hvp") in readme
    avx2 = comparison(PATHS["avx2"], "hvp")  # quoted as "+0.0065 [+0.0040, +0.0091], 9/10"
    assert avx2 in readme, avx2
