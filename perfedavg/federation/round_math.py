"""The pure pieces of a round (no grid, no Flower): client sampling, aggregation, metric means, the server's mean
of the clients' curvature diagnostics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from perfedavg.config import clients_per_round
from perfedavg.curvature import Weights, diagnostics


def sample_clients(rng: np.random.Generator, num_clients: int, fraction: float) -> list[int]:
    """``max(1, round(fraction · n))`` distinct client ids, sorted, drawn with ``rng``."""
    m = clients_per_round(num_clients, fraction)
    return sorted(int(c) for c in rng.choice(num_clients, size=m, replace=False))


def aggregate(updates: Sequence[Weights], weights: Sequence[float]) -> Weights:
    """Weighted average of state dicts (weights normalised to sum to one); uniform weights give the paper's rule."""
    total = float(sum(weights))
    if not updates or total <= 0:
        raise ValueError("nothing to aggregate")
    return {
        name: sum((w / total) * u[name].to(torch.float64) for u, w in zip(updates, weights)).to(updates[0][name].dtype)
        for name in updates[0]
    }


def mean_metric(rows: Sequence[Mapping[str, float]], key: str, weight_key: str | None = None) -> float:
    """Mean of ``key`` over rows, weighted by ``weight_key`` if given."""
    weights = [float(r[weight_key]) if weight_key else 1.0 for r in rows]
    return sum(w * float(r[key]) for r, w in zip(rows, weights)) / sum(weights)


def failure_reasons(failures: Sequence[tuple[int, str]]) -> str:
    """``client 3: <last line of its error>; …`` for a run-stopping message."""
    return "; ".join(f"client {c}: {r.strip().splitlines()[-1] if r.strip() else r}" for c, r in failures)


def all_finite(weights: Weights) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in weights.values())


def diagnostic_means(rows: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The client mean of each diagnostic the clients sent (``curvature/…``; NaN values left out, NaN if all are)
    and their mean cost ``time/diagnostics_s``; and the per-client values of each, for a histogram
    (``curvature/…_per_client``)."""
    means: dict[str, float] = {}
    per_client: dict[str, list[float]] = {}
    for name in diagnostics.NAMES:
        tag = diagnostics.TAG_PREFIX + name
        values = [float(r[tag]) for r in rows if tag in r]
        if not values:
            continue
        finite = [v for v in values if math.isfinite(v)]
        means[tag] = sum(finite) / len(finite) if finite else math.nan
        # Its own tag: TensorBoard's default loader drops a tag written both as a scalar and a histogram.
        per_client[tag + "_per_client"] = values  # the histogram leaves out non-finite values itself
    diagnosed = [r for r in rows if "diagnostics-s" in r]
    if diagnosed:
        means["time/diagnostics_s"] = mean_metric(diagnosed, "diagnostics-s")
    return means, per_client
