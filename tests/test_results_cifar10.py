"""docs/results.md's CIFAR-10 section and the README's CIFAR-10 figures, re-derived from committed per-seed CSVs
(issue 34): FedAvg from the baselines sweep, HF (hvp) from the fine-tuning comparison, FO and HF (fd) from their
re-run (scripts/results/paper_cifar10_tuned_fo_fd.md, the same figures as paper_cifar10_tuned.md's table), and FO at
HF's step sizes (paper_cifar10_fo_at_hf_steps_rerun.md)."""

from __future__ import annotations

import statistics

from results_text import RESULTS, ROOT, check_paired, differences, finals, mean_sd, table_after, unsigned

FEDAVG, FO, FD, HVP = "FedAvg", "Per-FedAvg (FO)", "Per-FedAvg (HF, fd)", "Per-FedAvg (HF, hvp)"
TUNED = ("paper_cifar10_baselines_runs.csv", "paper_cifar10_ft_vs_hf_runs.csv", "paper_cifar10_tuned_fo_fd_runs.csv")
CONTROL = "paper_cifar10_fo_at_hf_steps_rerun_runs.csv"  # FO at α = 0.0133, β = 0.0419
RAW = (ROOT / "docs" / "results.md").read_text().split("## CIFAR-10 (the paper's setting)", 1)[1].split("\n## ", 1)[0]
SECTION = unsigned(RAW)
README = unsigned((ROOT / "README.md").read_text())


def tuned(tag: str = "eval/personalized_acc") -> dict[str, dict[int, float]]:
    runs = finals(*TUNED, tag=tag)
    assert all(sorted(runs[m]) == list(range(5)) for m in (FEDAVG, FO, FD, HVP))
    return runs


def test_the_table_is_the_csvs() -> None:
    runs, global_acc = tuned(), tuned("eval/global_acc")
    rows = {row["method"]: row for row in table_after(RAW, "All 20 runs finished.")}
    for method in (FEDAVG, FO, FD, HVP):
        row = rows[method]
        assert row["final personalized accuracy"] == mean_sd(runs[method]), method
        assert row["final global accuracy"] == mean_sd(global_acc[method]), method
        if method != FEDAVG:
            check_paired(row["Δ personalized vs FedAvg (95 % interval, p)"], differences(runs, method, FEDAVG))
        if method in (FD, HVP):
            check_paired(row["Δ personalized vs FO (95 % interval, p)"], differences(runs, method, FO))


def test_the_bullets_are_the_csvs() -> None:
    runs, global_acc = tuned(), tuned("eval/global_acc")
    gains = [statistics.mean(differences(runs, m, FEDAVG)) for m in (FO, FD, HVP)]
    assert all(d > 0 for m in (FO, FD, HVP) for d in differences(runs, m, FEDAVG))  # "on all five seeds"
    assert f"by {100 * min(gains):.1f}–{100 * max(gains):.1f} points of personalized accuracy" in SECTION
    levels = [statistics.mean(global_acc[m].values()) for m in (FEDAVG, FO, FD, HVP)]
    assert f"with the global models level ({min(levels):.2f}–{max(levels):.2f})" in SECTION
    over_fo = [differences(runs, m, FO) for m in (FD, HVP)]
    assert all(d > 0 for diffs in over_fo for d in diffs)  # "HF is ahead of FO on every seed"
    means = [100 * statistics.mean(diffs) for diffs in over_fo]
    assert f"HF is ahead of FO on every seed, by {min(means):.1f}–{max(means):.1f} points" in SECTION
    assert abs(statistics.mean(runs[FD].values()) - statistics.mean(runs[HVP].values())) < 0.001  # "within 0.001"


def test_the_readme_cells_are_the_csvs() -> None:
    runs = tuned()
    for label, method in (("first-order", FO), ("HF (finite difference)", FD), ("HF (exact HVP)", HVP)):
        row = next(line for line in README.split("| Per-FedAvg, ")[1:] if line.startswith(label))
        cells = [c.strip() for c in row.split("|")]
        assert cells[3].startswith(mean_sd(runs[method])), (label, cells[3])
        check_paired(cells[4], differences(runs, method, FEDAVG))


def test_the_control_at_hfs_step_sizes_is_the_csvs() -> None:
    """FO re-run at fd's and hvp's pair over the same seeds: its mean, HF − FO per HF variant, the global models."""
    runs, global_acc = tuned(), tuned("eval/global_acc")
    control, control_global = finals(CONTROL)[FO], finals(CONTROL, tag="eval/global_acc")[FO]
    assert sorted(control) == list(range(5))
    assert f"reaches {mean_sd(control)} personalized" in SECTION
    fd, hvp = (differences({m: runs[m], FO: control}, m, FO) for m in (FD, HVP))
    check_paired("+0.0013 [-0.0098, +0.0125], p = 0.76, 3/5", fd)
    assert "HF - FO = +0.0013 for fd (95 % interval [-0.0098, +0.0125], p = 0.76, 3/5 seeds)" in SECTION
    check_paired("+0.0004 [-0.0087, +0.0094], p = 0.91, 4/5", hvp)
    assert "and +0.0004 for hvp ([-0.0087, +0.0094], p = 0.91, 4/5)" in SECTION
    hf_global = statistics.mean([*global_acc[FD].values(), *global_acc[HVP].values()])
    fo_global = statistics.mean(global_acc[FO].values())
    shown = f"0.{round(100 * hf_global):02d} with HF, 0.{round(100 * statistics.mean(control_global.values())):02d}"
    assert f"{shown} with FO at the same step sizes (0.{round(100 * fo_global):02d} at FO's own)" in SECTION
    assert f"(0.{round(10000 * statistics.mean(control.values())):04d} at HF's steps)" in README
    assert "CIFAR-10 at equal step sizes (HF - FO = +0.0004, p = 0.91)" in README


def test_the_curvature_bullet_quotes_the_reports_tables() -> None:
    """The diagnostics' medians as the CIFAR-10 reports print them (their per-round values were not committed): the
    tuned sweep's table, whose FO and fd rows the re-run's table repeats."""
    tables = {}
    for name in ("paper_cifar10_tuned.md", "paper_cifar10_tuned_fo_fd.md"):
        report = (RESULTS / name).read_text()
        tables[name] = {r["method"]: r for r in table_after(report, "Curvature diagnostics (medians")}
    tuned, rerun = tables["paper_cifar10_tuned.md"], tables["paper_cifar10_tuned_fo_fd.md"]
    assert rerun == {m: tuned[m] for m in (FO, FD)}
    ratio, cosine, top, scaled = "‖αHg‖ / ‖g‖", "cos((I − αH)g, g)", "λ_max(H) on D″", "α·λ_max median / max"
    fd, hvp = tuned[FD], tuned[HVP]
    assert f"median ‖αHg‖/‖g‖ = {fd[ratio]} (fd) and {hvp[ratio]} (hvp)" in SECTION
    assert f"cos((I - αH)g, g) = {fd[cosine]} and {hvp[cosine]} (the term" in SECTION
    assert fd[top] == hvp[top] and f"λ_max(H) ≈ {fd[top]}" in SECTION
    (median, fd_max), (median_hvp, hvp_max) = fd[scaled].split(" / "), hvp[scaled].split(" / ")
    assert median == median_hvp and f"α·λ_max = {median} at the median (max {fd_max} and {hvp_max})" in SECTION
    assert f"on FO's trajectory the term would have been {tuned[FO][ratio]} of g" in SECTION
