"""The Shakespeare counts quoted in docs/data.md and the configs are those of the committed output of
``python -m perfedavg.analysis.data_stats dataset=shakespeare dataset.path=…`` (scripts/results/shakespeare_data.md),
rounded as the text rounds them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATS = (ROOT / "scripts" / "results" / "shakespeare_data.md").read_text()


def number(text: str) -> int:
    return int(text.replace(",", ""))


def counted() -> dict[str, float]:
    rows, eligible = re.search(r"Rows: ([0-9,]+); eligible clients .*?: ([0-9,]+)\.", STATS).groups()
    train = re.search(r"\| train \| ([0-9,]+) \| ([0-9,]+) \| ([0-9,]+) \| ([0-9,]+) \|", STATS).groups()
    test = re.search(r"\| test \| ([0-9,]+) \|", STATS).group(1)
    space = re.search(r"\| space \| ([0-9.]+) \|", STATS).group(1)
    return {
        "rows": number(rows),
        "eligible": number(eligible),
        "train_median": number(train[1]),
        "train_most": number(train[3]),
        "test_total": number(test),
        "space": float(space),
    }


def thousands(n: float, digits: int = 0) -> str:
    return f"{n / 1000:.{digits}f}k"


def test_the_docs_and_configs_quote_the_committed_counts() -> None:
    c = counted()
    data_doc = " ".join((ROOT / "docs" / "data.md").read_text().split())
    experiment = (ROOT / "conf" / "experiment" / "shakespeare.yaml").read_text()
    experiment_prose = " ".join(line.lstrip("# ") for line in experiment.splitlines() if line.startswith("#"))
    assert f"({c['rows']:,} roles of 38 plays) {c['eligible']} roles have 450 characters or more" in data_doc
    assert f"the {c['eligible']} clients hold {thousands(c['test_total'])} test windows" in data_doc
    assert f"up to {thousands(c['train_most'])} windows; the median role has {thousands(c['train_median'], 1)}" in (
        data_doc
    )
    assert f"({c['eligible']} of the {c['rows']:,} roles" in experiment_prose
    assert f"the {c['eligible']} clients hold {thousands(c['test_total'])} test windows" in experiment_prose
    assert f"up to {thousands(c['train_most'])} windows" in experiment_prose
    assert f"stayed at {c['space']:.2f} accuracy (the space character's share of the text)" in experiment_prose
    assert re.search(rf"^num_clients: {c['eligible']}$", experiment, re.M)
    dataset = (ROOT / "conf" / "dataset" / "shakespeare.yaml").read_text()
    assert f"{c['eligible']} roles)" in dataset
    assert (
        f"a Shakespeare role: up to {thousands(c['train_most'])} windows" in (ROOT / "conf" / "config.yaml").read_text()
    )
