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
