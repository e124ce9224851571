"""The README's "Results in short" and docs/results.md's heterogeneity controls quote committed per-seed CSVs: each
figure is re-derived here (to the digits shown) from the CSV of the sweep it summarizes (issue 34). Figures from the
heterogeneity, stability and re-tuning sweeps are checked by their own tests (test_results_*.py)."""

from __future__ import annotations

import re
import statistics

import pytest
from results_text import (
    ROOT,
    check_paired,
    differences,
    finals,
    first_hvp_pair_failures,
    mean_sd,
    table_after,
    unsigned,
)

README = unsigned((ROOT / "README.md").read_text())
PAGE = (ROOT / "docs" / "results.md").read_text()
FEDAVG, FO, HF = "FedAvg", "Per-FedAvg (FO)", "Per-FedAvg (HF, hvp)"
FT, MATCHED = "FedAvg (fine-tuned)", "FedAvg (compute-matched)"
MNIST, FASHION = ("baselines_1_runs.csv",), ("baselines_2_runs.csv",)
CIFAR = ("paper_cifar10_baselines_runs.csv", "paper_cifar10_ft_vs_hf_runs.csv", "paper_cifar10_tuned_fo_fd_runs.csv")
#: a README phrase → (the CSVs, method, baseline) whose paired difference it states (its first signed figure)
README_PAIRED = {
    "FO - fine-tuned = +0.0019 [-0.0016, +0.0053]": (MNIST, FO, FT),
    "HF - fine-tuned = -0.0053 [-0.0136, +0.0029], p = 0.15, HF ahead on 1/5 seeds": (CIFAR, HF, FT),
    "(MNIST -0.010,": (MNIST, MATCHED, FEDAVG),
    "CIFAR-10 +0.005, p = 0.06)": (CIFAR, MATCHED, FEDAVG),
    "Fashion-MNIST Dirichlet(0.3) (+0.018 over HF, 5/5)": (FASHION, "Ditto", HF),
    "level with fine-tuned FedAvg (-0.0024, p = 0.07)": (MNIST, "Ditto", FT),
    "behind FO (-0.0043 [-0.0065, -0.0021], 0/5)": (MNIST, "Ditto", FO),
    "pFedMe trails FO on MNIST (-0.018)": (MNIST, "pFedMe", FO),
    "and HF on Fashion-MNIST (-0.010)": (FASHION, "pFedMe", HF),
    "and is level with FO there (-0.0002)": (FASHION, "pFedMe", FO),
    "(MNIST +1.6 points,": (MNIST, FO, FEDAVG),
    "Fashion-MNIST Dirichlet(0.3) (+1.2 FO,": (FASHION, FO, FEDAVG),
    "+2.2 HF)": (FASHION, HF, FEDAVG),
}


#: phrases whose figure is in percentage points ("+1.2 FO": +0.012)
IN_POINTS = {"(MNIST +1.6 points,", "Fashion-MNIST Dirichlet(0.3) (+1.2 FO,", "+2.2 HF)"}


def leading_figure(phrase: str) -> str:
    """From the phrase's first signed number on (one that starts a word: not CIFAR-10's "-10"), in points where the
    README writes points."""
    text = phrase[re.search(r"(?:^|(?<=[\s(]))[+-]\d", phrase).start() :]
    if phrase in IN_POINTS:
        sign, whole, tenth = re.match(r"([+-])(\d+)\.(\d)", text).groups()
        return f"{sign}0.0{whole}{tenth}"
    return text


@pytest.mark.parametrize("phrase", list(README_PAIRED))
def test_a_readme_figure_is_its_csvs(phrase: str) -> None:
    csvs, method, baseline = README_PAIRED[phrase]
    assert phrase in README, phrase
    check_paired(leading_figure(phrase), differences(finals(*csvs), method, baseline))


def test_the_readme_fine_tuned_cifar10_figure_is_its_csv() -> None:
    assert f"(seven steps: {mean_sd(finals(*CIFAR)[FT])}," in README


#: docs/results.md's controls table (FO and HF at one pair, α_D = 0.1): data set and pair → CSV
CONTROLS = {
    ("MNIST", "0.0133, 0.0419 (HF's)"): "heterogeneity_controls_1_runs.csv",
    ("Fashion-MNIST", "0.0133, 0.0419 (FO's)"): "heterogeneity_controls_3_runs.csv",
}


def test_the_controls_table_and_the_readme_control_are_the_csvs() -> None:
    rows = {(r["data set, α_D = 0.1"], r["common α, β"]): r for r in table_after(PAGE, "the three rows below).")}
    for key, name in CONTROLS.items():
        runs, global_acc = finals(name), finals(name, tag="eval/global_acc")
        row = rows[key]
        assert (row["FO"], row["HF (hvp)"]) == (mean_sd(runs[FO]), mean_sd(runs[HF])), key
        check_paired(row["HF − FO, same seeds"], differences(runs, HF, FO))
        fo_global, hf_global = (statistics.mean(global_acc[m].values()) for m in (FO, HF))
        assert row["global accuracy FO / HF"] == f"{fo_global:.2f} / {hf_global:.2f}", key
    mnist = finals(CONTROLS[("MNIST", "0.0133, 0.0419 (HF's)")])
    check_paired("+0.0148 [+0.0120, +0.0176], 5/5", differences(mnist, HF, FO))
    assert "Control at equal step sizes: +0.0148 [+0.0120, +0.0176], 5/5, on MNIST Dirichlet(0.1)" in README
    global_acc = finals(CONTROLS[("MNIST", "0.0133, 0.0419 (HF's)")], tag="eval/global_acc")
    hf_global, fo_global = (statistics.mean(global_acc[m].values()) for m in (HF, FO))
    assert f"({hf_global:.2f} against FO's {fo_global:.2f} on MNIST Dirichlet(0.1))" in README


#: MNIST's ten-seed sweep at the HF pair paper_mnist_tuned holds (α = 0.016, β = 0.0805), default path: the table's
#: MNIST HF cells are its seeds 0–4, "vs FedAvg" paired with the baselines sweep's FedAvg (the sweep ran HF only)
MARGIN = ("mnist_paper_hf_margin_1_runs.csv",)
FIRST_FIVE = range(5)

#: The README's results table: row → the method in each data set's CSVs (MNIST, CIFAR-10, Fashion-MNIST), or
#: (CSVs, method) where a cell comes from another sweep than its column's; None where the figure has no committed
#: per-seed CSV (the older sweeps named in issue 34; left unchecked until re-run)
TABLE_ROWS = {
    "FedAvg (tuned)": (FEDAVG, FEDAVG, FEDAVG),
    "FedAvg, fine-tuned (tuned steps: 10 MNIST, 7 CIFAR-10)": (FT, FT, None),
    "FedAvg, compute-matched": (MATCHED, MATCHED, None),
    "Per-FedAvg, first-order": (FO, FO, FO),
    "Per-FedAvg, HF (finite difference)": ((MARGIN, "Per-FedAvg (HF, fd)"), "Per-FedAvg (HF, fd)", None),
    "Per-FedAvg, HF (exact HVP)": ((MARGIN, HF), HF, HF),
    "pFedMe": ("pFedMe", None, "pFedMe"),
    "Ditto": ("Ditto", None, "Ditto"),
}


def test_the_readme_table_is_the_csvs_where_they_exist() -> None:
    lines = (ROOT / "README.md").read_text().split("| | MNIST, the paper's split", 1)[1].splitlines()[2:]
    rows = {}
    for line in lines:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    assert list(rows) == list(TABLE_ROWS)
    checked = 0
    for label, methods in TABLE_ROWS.items():
        for (csvs, method), (value, versus) in zip(
            zip((MNIST, CIFAR, FASHION), methods), zip(rows[label][0::2], rows[label][1::2])
        ):
            if method is None or value == "not run":
                continue
            seeds = None
            by_method = finals(*csvs)
            if isinstance(method, tuple):
                (csvs, method), seeds = method, FIRST_FIVE
                by_method = {**finals(*csvs), FEDAVG: by_method[FEDAVG]}
            runs = {m: {s: v for s, v in by.items() if seeds is None or s in seeds} for m, by in by_method.items()}
            assert value.startswith(mean_sd(runs[method])), (label, value)
            if versus:
                check_paired(versus, differences(runs, method, FEDAVG))
            checked += 1
    assert checked == 19


def test_the_readme_counts_of_failed_hf_seeds_are_the_csvs() -> None:
    """ "The exact term is fragile": on Fashion-MNIST Dirichlet(0.1) at the first tuning's pair, 3 of 5 seeds failed
    (one stopped: no final value; two at chance level); on MNIST's paper split at α = 0.144, 2 of 5 here (the
    baselines sweep's HF runs ended far below its other methods: 0.38 and 0.06)."""
    chance = 1.5 / 10
    fashion = finals("heterogeneity_fashion_mnist_4_runs.csv")[HF]
    stopped = 5 - len(fashion)
    at_chance = sum(v <= chance for v in fashion.values())
    assert (stopped, at_chance) == (1, 2)
    assert f"failed on {stopped + at_chance} of 5 test seeds (one diverged, two ended at chance level)" in README
    mnist = finals(*MNIST)[HF]
    assert all(v > 0.98 for v in mnist.values() if v >= 0.5)  # the seeds not lost end far above the lost ones
    earlier, lost, intel_lost = first_hvp_pair_failures()
    assert (earlier, lost, intel_lost) == (1, 2, 4)
    assert (
        f"HF (hvp) lost {earlier} of 10 seeds on the machine that made the ten-seed table, {lost} of 5 on this one and "
        f"{intel_lost} of 10 on an Intel Xeon, where FO finished every seed it ran on all three"
    ) in README
    assert f"at the first tuning's α = 0.144 HF (hvp) collapsed on {lost} of these 5 seeds" in README
