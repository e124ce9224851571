"""What a finished round leaves behind besides the checkpoint: its scalars and per-client histograms in TensorBoard
(:class:`~perfedavg.federation.tracking.RunLogger`) and its console line with the run's ETA."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from perfedavg.federation.console import eta_seconds, progress_line

log = logging.getLogger("perfedavg")


class RoundReporter:
    """Reports each round of a run of ``total`` rounds to ``tracker`` (None: the console only)."""

    def __init__(self, tracker: Any | None, total: int) -> None:
        self.tracker = tracker
        self.total = total
        self.round_times: list[float] = []  # this process's rounds, for the ETA

    def report(
        self,
        server_round: int,
        metrics: Mapping[str, float],
        per_client: Sequence[float],
        histograms: Mapping[str, Sequence[float]],
    ) -> None:
        """``metrics`` as scalars; ``per_client``: the evaluated clients' personalized accuracy (or loss) as a
        histogram, beside ``histograms`` (e.g. the clients' curvature diagnostics); then the console line."""
        if self.tracker is not None:
            self.tracker.scalars(server_round, metrics)
            measure = "acc" if "eval/personalized_acc" in metrics else "loss"
            self.tracker.histogram(f"eval/personalized_{measure}_per_client", per_client, server_round)
            for tag, values in histograms.items():
                self.tracker.histogram(tag, values, server_round)
        self.round_times.append(metrics["time/round_s"])
        eta = eta_seconds(self.round_times, server_round, self.total)
        log.info(progress_line(server_round, self.total, metrics, eta))
