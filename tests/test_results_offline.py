"""docs/results.md's untuned tables of the paper's setting — its offline analogues (``paper_digits``,
``paper_synthetic``: FedAvg, FO and HF at α = 0.05, β = 0.1) and ``paper_mnist`` at the paper's α = β = 0.001, seeds
0–4 — are re-derived from their committed per-seed CSVs (``perfedavg-reproduce paper_digits``, ``perfedavg-report …
--out scripts/results/paper_digits.md``), every cell to the digits shown."""

from __future__ import annotations

import re
import statistics

import pytest
from results_text import ROOT, check_paired, differences, finals, mean_sd, table_after, unsigned

PAGE = (ROOT / "docs" / "results.md").read_text()
FEDAVG = "FedAvg"


@pytest.mark.parametrize(
    ("experiment", "marker"),
    [
        ("paper_digits", "**`paper_digits`**"),
        ("paper_synthetic", "**`paper_synthetic`**"),
        ("paper_mnist", "**`paper_mnist` on the real MNIST**"),  # the paper's step sizes, α = β = 0.001
    ],
)
def test_the_literal_step_table_is_the_csvs(experiment: str, marker: str) -> None:
    runs = finals(f"{experiment}_runs.csv")
    global_acc = finals(f"{experiment}_runs.csv", tag="eval/global_acc")
    rows = table_after(PAGE, marker)
    assert [r["method"] for r in rows] == list(runs)
    for row in rows:
        method = row["method"]
        assert sorted(runs[method]) == [0, 1, 2, 3, 4], method
        assert row["final global accuracy"] == mean_sd(global_acc[method]), method
        assert row["final personalized accuracy"] == mean_sd(runs[method]), method
        if method == FEDAVG:
            continue
        diffs = differences(runs, method, FEDAVG)
        shown = f"{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f}".replace("-", "−")
        assert row["Δ personalized vs FedAvg, same seeds"] == shown, method
        assert row["ahead on"] == f"{sum(d > 0 for d in diffs)}/5 seeds", method


def test_the_prose_on_hf_against_fo_is_the_csvs() -> None:
    """ "HF ≥ FO, in the means only": the seeds ahead, tied and behind, and the means it quotes."""
    page = " ".join(PAGE.replace("−", "-").split())
    fo, fd, hvp = "Per-FedAvg (FO)", "Per-FedAvg (HF, fd)", "Per-FedAvg (HF, hvp)"
    digits, synthetic = finals("paper_digits_runs.csv"), finals("paper_synthetic_runs.csv")
    d_fd, d_hvp = differences(digits, fd, fo), differences(digits, hvp, fo)
    s_fd, s_hvp = differences(synthetic, fd, fo), differences(synthetic, hvp, fo)
    assert sum(d > 0 for d in d_fd) == sum(d > 0 for d in d_hvp) == 3
    assert (sum(d == 0 for d in d_fd), sum(d < 0 for d in d_fd), sum(d == 0 for d in d_hvp)) == (1, 1, 2)
    assert f"one, {statistics.mean(d_fd):+.4f} on average; hvp: tied on two)" in page
    low, high = min(s_fd), max(s_fd)
    assert f"HF (fd) is ahead on all 5 seeds ({statistics.mean(s_fd):+.4f}, by {low:.3f}–{high:.3f})" in page
    assert all(d > 0 for d in s_fd) and sum(d > 0 for d in s_hvp) == 4
    fo_synthetic = differences(synthetic, fo, FEDAVG)
    assert f"all 5 synthetic seeds ({statistics.mean(fo_synthetic):+.4f} on average)" in page


def test_the_prose_under_the_paper_mnist_table_is_the_csv() -> None:
    """HF − FO (fd and hvp), the seeds ahead of FedAvg, and FedAvg's personalization step, as the text quotes them."""
    fo, fd, hvp = "Per-FedAvg (FO)", "Per-FedAvg (HF, fd)", "Per-FedAvg (HF, hvp)"
    runs, global_acc = finals("paper_mnist_runs.csv"), finals("paper_mnist_runs.csv", tag="eval/global_acc")
    text = unsigned(PAGE.split("**`paper_mnist` on the real MNIST**", 1)[1].split("**Step sizes tuned per method**")[0])
    quoted = re.search(r"HF - FO = (\S+ \[\S+ \S+\], \d/5), for fd and hvp alike", text)
    assert quoted, text
    check_paired(quoted.group(1), differences(runs, fd, fo))
    assert differences(runs, fd, fo) == differences(runs, hvp, fo)  # "alike": the same runs to the last bit
    ahead = [sum(d > 0 for d in differences(runs, m, FEDAVG)) for m in (fd, hvp, fo)]
    assert ahead == [5, 5, 4] and "HF is ahead of FedAvg on 5 of 5 seeds, FO on 4 of 5" in text
    before, after = statistics.mean(global_acc[FEDAVG].values()), statistics.mean(runs[FEDAVG].values())
    assert f"about {after - before:.4f} (global {before:.4f} → personalized {after:.4f} for FedAvg)" in text
