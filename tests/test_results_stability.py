"""The stability monitor's results text is its committed per-run CSV: scripts/results/stability.md's tables and the
figures docs/curvature.md quotes are re-derived from scripts/results/stability_runs.csv here (issue 34: text and
data cannot drift apart)."""

from __future__ import annotations

from pathlib import Path

from perfedavg.analysis import stability_check

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"


def test_the_results_file_is_its_csv() -> None:
    rows = stability_check.read_csv(RESULTS / "stability_runs.csv")
    assert len(rows) >= 20
    assert stability_check.summary(rows) in (RESULTS / "stability.md").read_text()


def test_the_curvature_page_quotes_the_csv_with_the_default_rule() -> None:
    rows = stability_check.read_csv(RESULTS / "stability_runs.csv")
    page = (ROOT / "docs" / "curvature.md").read_text()
    assert stability_check.shown_doc_block(page) == stability_check.doc_block(rows, stability_check.default_rule())


def test_the_doc_block_is_rewritten_in_place() -> None:
    page = f"intro\n{stability_check.DOC_START}old\n{stability_check.DOC_END}\nafter\n"
    new = stability_check.with_doc_block(page, "- new figure.")
    assert new == f"intro\n{stability_check.DOC_START}- new figure.\n{stability_check.DOC_END}\nafter\n"
    assert stability_check.shown_doc_block(new) == "- new figure."


def test_the_readme_gains_of_hf_over_fo_are_the_csvs() -> None:
    """The README's tuned-vs-tuned HF − FO figures on MNIST Dirichlet(0.1) and Fashion-MNIST Dirichlet(0.3) are
    the paired differences of the stability check's FO and plain-HF runs (the same settings and seeds, re-run: they
    reproduce the heterogeneity sweep's figures to the last digit)."""
    rows = stability_check.read_csv(RESULTS / "stability_runs.csv")
    readme = " ".join((ROOT / "README.md").read_text().split())  # lines reflowed: one space between words
    for setting in ("mnist_dirichlet0.1", "fashion_mnist_dirichlet0.3"):
        runs = [r for r in rows if r["setting"] == setting]
        hvp = stability_check._finals([r for r in runs if r["method"] == "hvp"])
        fo = stability_check._finals([r for r in runs if r["method"] == "fo"])
        mean, interval = stability_check._paired(hvp, fo).split(" ", 1)
        interval, ahead = interval.rsplit(", ", 1)
        assert f"**{mean}** {interval}".replace("-", "−") in readme.replace("-", "−"), (setting, mean, interval)
        assert ahead == "5/5"


def test_why_the_monitor_does_not_constrain_the_tuner_is_the_csvs() -> None:
    """docs/reproducing.md: at MNIST Dirichlet(0.1) the default warning fires on every HF run, none collapses, and HF
    is ahead of FO on every seed."""
    rows = [r for r in stability_check.read_csv(RESULTS / "stability_runs.csv") if r["setting"] == "mnist_dirichlet0.1"]
    hvp = [r for r in rows if r["method"] == "hvp"]
    warned = [r for r in hvp if r["first_warning_f50_every20"] not in ("", None)]
    collapsed = [r for r in hvp if r["collapse_round"] not in ("", None)]
    fo = [r for r in rows if r["method"] == "fo"]
    ahead = stability_check._paired(stability_check._finals(hvp), stability_check._finals(fo)).rsplit(", ", 1)[1]
    doc = " ".join((ROOT / "docs" / "reproducing.md").read_text().split())
    n = len(hvp)
    assert (len(warned), len(collapsed), ahead) == (n, 0, f"{n}/{n}")
    assert f"{n} of {n} at MNIST Dirichlet(0.1), where HF beats FO on {n} of {n} seeds" in doc
