"""Issue 34, item 2, on a third host: MNIST's paper split at the re-tuned pair on an Intel Xeon (HF (hvp) seeds 0–9,
FO seeds 0–9, HF (fd) seeds 0–4), after the AMD EPYC's two arithmetic paths. docs/results.md's section is
re-derived from the committed per-seed CSV (scripts/results/mnist_paper_hf_retuned_intel_runs.csv) and the AMD
sweep's (mnist_paper_hf_retuned_1/2_runs.csv)."""

from __future__ import annotations

import csv
import math

from results_text import RESULTS, ROOT, check_paired, collapsed, differences, finals, mean_sd, table_after, unsigned

FO, FD, HVP = "Per-FedAvg (FO)", "Per-FedAvg (HF, fd)", "Per-FedAvg (HF, hvp)"
INTEL, AMD = "mnist_paper_hf_retuned_intel_runs.csv", "mnist_paper_hf_retuned_1_runs.csv"
HEADING = "### MNIST's paper split re-tuned, on a third host: an Intel Xeon"
RAW = (ROOT / "docs" / "results.md").read_text().split(HEADING, 1)[1].split("\n#", 1)[0]
SECTION = unsigned(RAW)
REPORT = (RESULTS / "mnist_paper_hf_retuned_intel.md").read_text()


def test_every_run_is_at_the_experiments_pairs_and_the_seeds_are_complete() -> None:
    with (RESULTS / INTEL).open() as f:
        rows = list(csv.DictReader(f))
    pairs = {r["method"]: set() for r in rows}
    for r in rows:
        pairs[r["method"]].add((r["alpha"], r["beta"]))
    assert pairs == {FO: {("0.144", "0.132")}, FD: {("0.0152", "0.179")}, HVP: {("0.0152", "0.179")}}
    runs = finals(INTEL)
    assert {m: sorted(by) for m, by in runs.items()} == {FO: list(range(10)), FD: list(range(5)), HVP: list(range(10))}


def test_the_table_is_the_csvs() -> None:
    intel, amd = finals(INTEL), finals(AMD)
    row = table_after(RAW, "Report and per-seed CSV")[0]
    assert row["FO"] == mean_sd(intel[FO])
    assert row["HF (hvp)"] == mean_sd(intel[HVP]) and row["HF (fd), seeds 0–4"] == mean_sd(intel[FD])
    check_paired(row["HF (hvp) − FO, same seeds"], differences(intel, HVP, FO))
    check_paired(row["HF (fd) − FO, seeds 0–4"], differences(intel, FD, FO))
    amd_row = table_after(RAW, "Report and per-seed CSV")[1]  # the AMD default path's same cells, for comparison
    assert amd_row["FO"] == mean_sd(amd[FO]) and amd_row["HF (hvp)"] == mean_sd(amd[HVP])
    check_paired(amd_row["HF (hvp) − FO, same seeds"], differences(amd, HVP, FO))
    amd5 = {m: {s: v for s, v in by.items() if s < 5} for m, by in amd.items()}
    assert amd_row["HF (fd), seeds 0–4"] == mean_sd(amd5[FD])
    check_paired(amd_row["HF (fd) − FO, seeds 0–4"], differences(amd5, FD, FO))


def test_no_hvp_seed_collapsed_here_and_fo_is_the_amd_runs() -> None:
    intel, amd = finals(INTEL), finals(AMD)
    assert "Collapsed on the way" not in REPORT and "Stopped before" not in REPORT
    floor = math.floor(min(intel[HVP].values()) * 1000) / 1000
    assert f"all ten hvp seeds finished, at {floor:.3f} personalized accuracy or more" in SECTION
    amd_lost = [c for c in collapsed("mnist_paper_hf_retuned.md", "default") if c[0] == HVP]
    assert [(s, r) for _, s, r, _ in amd_lost] == [(7, 595)]
    assert f"seed 7 (0.{round(intel[HVP][7] * 10000):04d} here)" in SECTION
    same = [s for s in range(10) if intel[FO][s] == amd[FO][s]]
    assert (
        same == list(range(10)) and "FO came out with the AMD runs' final personalized accuracy on all ten" in SECTION
    )
    warned = REPORT.split("Stability monitor", 1)[1]
    count = int(warned.split("Per-FedAvg (HF, hvp): warned in ", 1)[1].split(" of ", 1)[0])
    assert f"stability monitor warned in {count} of the 10 hvp runs" in SECTION


def test_the_count_over_three_paths_is_the_csvs() -> None:
    amd_runs = sum(
        len(by)
        for name in (AMD, "mnist_paper_hf_retuned_2_runs.csv")
        for m, by in finals(name).items()
        if m in (FD, HVP)
    )
    intel_runs = sum(len(by) for m, by in finals(INTEL).items() if m in (FD, HVP))
    lost = [
        c for path in ("default", "avx2") for c in collapsed("mnist_paper_hf_retuned.md", path) if c[0] in (FD, HVP)
    ]
    assert "Collapsed on the way" not in REPORT and "Stopped before" not in REPORT  # none on this host
    assert (len(lost), amd_runs, intel_runs) == (1, 40, 15)
    assert f"collapsed once in {amd_runs + intel_runs} ({amd_runs} on the AMD EPYC, {intel_runs} here)" in SECTION
