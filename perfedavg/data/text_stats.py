"""What a text data set holds once it is cut into clients and windows (:mod:`perfedavg.data.text`): how many rows
and eligible clients, how many windows each part gives per client, and which characters dominate. The figures that
docs/data.md and conf/experiment/shakespeare.yaml quote come from here
(``python -m perfedavg.analysis.data_stats``), not from a one-off count.

Cost: one pass over the encoded corpus (a ``bincount`` of its characters) after the cached decode; no tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from perfedavg.data import text


@dataclass(frozen=True)
class Spread:
    """Windows per client in one part: the total over clients, the median, the smallest and the largest."""

    total: int
    median: float
    smallest: int
    largest: int

    @staticmethod
    def of(counts: np.ndarray) -> Spread:
        if counts.size == 0:
            return Spread(0, 0.0, 0, 0)
        return Spread(int(counts.sum()), float(np.median(counts)), int(counts.min()), int(counts.max()))


@dataclass(frozen=True)
class TextStats:
    """A text data set under one ``dataset`` config: rows, eligible clients, their characters, the windows per part
    (``train``, ``val`` where ``val_fraction`` > 0, ``test``), and the commonest characters' shares of the eligible
    text (the accuracy of always predicting the first one is about its share)."""

    rows: int
    eligible: int
    min_chars: int
    window: int
    characters: int
    windows: dict[str, Spread]
    commonest: list[tuple[str, float]]
    unknown_share: float


def statistics(params: Mapping[str, Any], top: int = 5) -> TextStats:
    """The statistics of ``params`` (a text ``dataset`` config: path, columns, min_chars, input_shape, fractions)."""
    data = text.corpus(params)
    rows = text.eligible(params, data)
    length = text.window_length(params)
    test_fraction, val_fraction = float(params["test_fraction"]), float(params.get("val_fraction", 0))
    parts = np.array([text.part_lengths(int(n), test_fraction, val_fraction) for n in data.sizes()[rows]])
    parts = parts.reshape(-1, 3)
    windows = {"train": Spread.of(np.maximum(0, parts[:, 0] - length))}
    if val_fraction > 0:
        windows["val"] = Spread.of(np.maximum(0, parts[:, 1] - length))
    windows["test"] = Spread.of(np.maximum(0, parts[:, 2] - length))
    counts = np.zeros(text.NUM_CLASSES, dtype=np.int64)
    for row in rows:
        counts += np.bincount(data.row(int(row)), minlength=text.NUM_CLASSES)
    total = int(counts.sum())
    order = np.argsort(-counts, kind="stable")[:top]
    commonest = [(_symbol(int(i)), counts[i] / total if total else 0.0) for i in order if counts[i] > 0]
    return TextStats(
        rows=len(data.names),
        eligible=len(rows),
        min_chars=int(params["min_chars"]),
        window=length,
        characters=total,
        windows=windows,
        commonest=commonest,
        unknown_share=counts[text.UNKNOWN] / total if total else 0.0,
    )


def _symbol(i: int) -> str:
    """A character id as a reader sees it: ``space``, ``newline``, ``unknown`` or the character itself."""
    if i == text.UNKNOWN:
        return "unknown"
    return {" ": "space", "\n": "newline"}.get(text.VOCABULARY[i], text.VOCABULARY[i])


def markdown(stats: TextStats, name: str) -> str:
    """The statistics as a short Markdown section (what ``python -m perfedavg.analysis.data_stats`` prints)."""
    lines = [
        f"# {name}: clients, windows and characters",
        "",
        f"- Rows: {stats.rows:,}; eligible clients (at least dataset.min_chars = {stats.min_chars:,} characters): "
        f"{stats.eligible:,}.",
        f"- Characters of the eligible clients: {stats.characters:,}.",
        f"- Windows of {stats.window} characters per client, by part:",
        "",
        "| part | windows in all | median per client | fewest | most |",
        "|---|---:|---:|---:|---:|",
    ]
    for part, s in stats.windows.items():
        lines.append(f"| {part} | {s.total:,} | {s.median:,.0f} | {s.smallest:,} | {s.largest:,} |")
    lines += ["", "Commonest characters (share of the eligible clients' characters):", ""]
    lines += ["| character | share |", "|---|---:|"]
    lines += [f"| {symbol} | {share:.4f} |" for symbol, share in stats.commonest]
    lines += ["", f"Characters outside the vocabulary (the unknown symbol): {stats.unknown_share:.4f} of them."]
    return "\n".join(lines) + "\n"
