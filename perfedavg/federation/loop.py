"""The server's round loop over any Flower :class:`~flwr.serverapp.Grid`: each round samples clients, trains them,
aggregates, evaluates on schedule, reports and checkpoints.

The loop's collaborators each own one concern: :class:`~perfedavg.federation.clients.ClientChannel` (nodes,
messages, replies and failures, through the engine's transport), :class:`~perfedavg.federation.client_states.
ClientStateStore` (a stateful algorithm's per-client state), :mod:`~perfedavg.federation.round_math` (sampling,
aggregation, metric means), :class:`~perfedavg.federation.reporting.RoundReporter` (TensorBoard and the console
line) and :mod:`perfedavg.checkpoint`. No client math here (clients run :mod:`perfedavg.algorithms` through
:mod:`perfedavg.engines.client_app`; the server's side of an algorithm is its
:meth:`~perfedavg.algorithms.base.Algorithm.server_update`) and no Flower entry point:
:func:`perfedavg.federation.record.run_and_record` runs it for the ServerApps and the tests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import MessageType
from flwr.serverapp import Grid

from perfedavg import algorithms, checkpoint, task
from perfedavg.curvature import Weights
from perfedavg.curvature.stability import REPLY_ALPHA, REPLY_KEY, REPLY_SECONDS, StabilityWatch
from perfedavg.federation import FederationError, step_estimate
from perfedavg.federation.client_states import ClientStateStore
from perfedavg.federation.clients import ClientChannel
from perfedavg.federation.divergence import LossWatch
from perfedavg.federation.reporting import RoundReporter
from perfedavg.federation.round_math import (
    aggregate,
    all_finite,
    diagnostic_means,
    failure_reasons,
    mean_metric,
    sample_clients,
)
from perfedavg.federation.stopping import STOP, FederationInterrupted, stopping_caused_it
from perfedavg.federation.transport import PollingTransport, Transport

log = logging.getLogger("perfedavg")


@dataclass
class History:
    """Per-round metrics as written to TensorBoard, plus the final summary."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    client_failures: int = 0

    def final(self) -> dict[str, float]:
        last_eval = next((r for r in reversed(self.rounds) if "eval/global_loss" in r), {})
        out = {k: v for k, v in last_eval.items() if k.startswith("eval/")}
        out["train/loss"] = self.rounds[-1]["train/loss"] if self.rounds else math.nan
        return out


class Federation:
    """One federation over a :class:`~flwr.serverapp.Grid`; :meth:`run` executes every round."""

    def __init__(
        self,
        grid: Grid,
        cfg: dict[str, Any],
        run_dir: Path,
        tracker: Any | None = None,
        resume_state: dict[str, Any] | None = None,
        transport: Transport | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.resume_state = resume_state
        self.algorithm = algorithms.get(cfg["algorithm"]["name"])
        self.spec = task.local_spec(cfg)
        self.states = ClientStateStore() if self.algorithm.stateful else None
        self.channel = ClientChannel(grid, transport or PollingTransport(), cfg, self.states)
        self.reporter = RoundReporter(tracker, int(cfg["num_rounds"]))
        self.sample_rng = np.random.default_rng([cfg["seed"], 1])
        self.history = History()
        self.round_histograms: dict[str, list[float]] = {}  # this round's per-client values besides evaluation's
        monitor = cfg.get("stability", {})
        self.stability = StabilityWatch(
            cfg["alpha"],
            float(monitor.get("warn_above", 2.0)),
            float(monitor.get("warn_fraction", 0.5)),
            # no warning for FO (it applies no (I − αH)) nor under the safeguard (it keeps each α·λ_max ≤ c)
            warns=self.algorithm.declaration.uses_hessian
            and cfg["hessian"]["mode"] != "fo"
            and monitor.get("safeguard") is None,
        )
        self.guarded = monitor.get("safeguard") is not None
        self.loss_watch = LossWatch(cfg["alpha"], cfg["beta"])
        self.completed = int(resume_state["round"]) if resume_state else 0  # the last checkpointed round

    def run(self) -> dict[str, Any]:
        started, timeline = time.perf_counter(), {"server_start": time.time()}
        self.channel.discover(self.completed)
        timeline["first_round_start"] = time.time()
        weights, first = self._initial_state()
        total = int(self.cfg["num_rounds"])
        self._estimate_round_time(first, total)
        for server_round in range(first, total + 1):
            if STOP.is_set():
                raise FederationInterrupted.now(self.completed)
            try:
                weights, metrics, per_client = self._round(server_round, weights, total)
            except Exception:
                if stopping_caused_it():
                    raise FederationInterrupted.now(self.completed) from None
                raise
            self.history.rounds.append({"round": server_round, **metrics})
            if warning := self.loss_watch.observe(self.history.rounds):
                log.warning(warning)
            self.reporter.report(server_round, metrics, per_client, self.round_histograms)
            self._checkpoint(server_round, weights)
            self.completed = server_round
        return {
            "final": self.history.final(),
            "rounds": self.history.rounds,
            "client_failures": self.history.client_failures,
            "wall_s": time.perf_counter() - started,
            "timeline": {**timeline, "end": time.time()},
        }

    def _round(self, server_round: int, weights: Weights, total: int) -> tuple[Weights, dict[str, float], list[float]]:
        """One round: training, the finite check, evaluation on schedule; the new weights, the round's metrics and
        the evaluated clients' personalized values."""
        t0 = time.perf_counter()
        weights, metrics = self.train_round(server_round, weights)
        metrics["time/train_s"] = time.perf_counter() - t0
        if not all_finite(weights):
            raise FederationError(
                f"round {server_round}: the aggregated global model is not finite; the run diverged "
                f"(try smaller step sizes: alpha={self.cfg['alpha']}, beta={self.cfg['beta']})"
            )
        per_client: list[float] = []
        if server_round % self.cfg["eval_every"] == 0 or server_round == total:
            t1 = time.perf_counter()
            eval_metrics, per_client = self.evaluate_round(server_round, weights)
            metrics.update(eval_metrics)
            metrics["time/eval_s"] = time.perf_counter() - t1
        metrics["time/round_s"] = time.perf_counter() - t0
        return weights, metrics, per_client

    def train_round(self, server_round: int, weights: Weights) -> tuple[Weights, dict[str, float]]:
        clients = sample_clients(self.sample_rng, self.cfg["num_clients"], self.cfg["fraction"])
        replies, failures = self.channel.exchange(
            server_round, self.channel.messages(clients, weights, server_round, MessageType.TRAIN)
        )
        self._count_failures(server_round, "training", failures)
        self._unsure(cid for cid, _ in failures)
        updates, rows, non_finite = [], [], 0
        probed = []  # the stability monitor's rows: every reply's, a non-finite update's included
        for reply in replies:
            update = reply.content["arrays"].to_torch_state_dict()
            row = dict(reply.content["metrics"])
            if REPLY_KEY in row:
                probed.append(row)
            if not (all_finite(update) and math.isfinite(row["train-loss"])):
                log.warning("round %d: client %d sent a non-finite update; excluded", server_round, row["client-id"])
                failures.append((int(row["client-id"]), "non-finite update"))
                self.history.client_failures += 1
                non_finite += 1
                self._unsure([int(row["client-id"])])  # its node moved on; the server's copy did not
                continue
            updates.append(update)
            rows.append(row)
            if self.states is not None:
                self.states.received(int(row["client-id"]), reply.content, server_round)
        if not updates and failures and non_finite == len(failures):
            raise FederationError(
                f"round {server_round}: every client's update is non-finite: the run diverged (try smaller step "
                f"sizes: alpha={self.cfg['alpha']}, beta={self.cfg['beta']})"
            )
        if len(updates) < max(1, self.cfg["min_clients"]):
            reasons = failure_reasons(failures)
            what = f"all {len(clients)}" if not updates else f"{len(failures)} of {len(clients)}"
            raise FederationError(
                f"round {server_round}: {what} sampled clients failed, {len(updates)} succeeded "
                f"(min_clients={self.cfg['min_clients']}): {reasons}"
            )
        weighted = self.cfg["aggregation"] == "weighted"
        averaged = aggregate(updates, [r["num-examples"] if weighted else 1.0 for r in rows])
        new = self.algorithm.server_update(weights, averaged, self.spec)
        metrics = {
            "train/loss": mean_metric(rows, "train-loss", "num-examples" if weighted else None),
            "time/curvature_s": mean_metric(rows, "curvature-s"),
            "time/client_compute_s": mean_metric(rows, "compute-s"),
            "time/train_compute_total_s": sum(float(r["compute-s"]) for r in rows),
            "clients/trained": float(len(updates)),
            "clients/failed": float(len(failures)),
            "clients/non_finite": float(non_finite),
        }
        means, self.round_histograms = diagnostic_means(rows)
        metrics.update(means)
        if probed:
            watched = self.stability.observe(
                server_round,
                [float(r[REPLY_KEY]) for r in probed],
                [float(r[REPLY_SECONDS]) for r in probed],
                [float(r.get(REPLY_ALPHA, self.cfg["alpha"])) for r in probed] if self.guarded else None,
            )
            metrics.update(watched.metrics)
            self.round_histograms.update(watched.histograms)
            if watched.warning:
                log.warning(watched.warning)
        return new, metrics

    def evaluate_round(self, server_round: int, weights: Weights) -> tuple[dict[str, float], list[float]]:
        # The evaluation sample is a function of (seed, round) alone: a run extended past its end, or resumed,
        # evaluates the clients a fresh run of that length would.
        rng = np.random.default_rng([self.cfg["seed"], 2, server_round])
        clients = sample_clients(rng, self.cfg["num_clients"], self.cfg["eval_fraction"])
        replies, failures = self.channel.exchange(
            server_round, self.channel.messages(clients, weights, server_round, MessageType.EVALUATE)
        )
        self._count_failures(server_round, "evaluation", failures)
        self._unsure(cid for cid, _ in failures)
        rows = [dict(r.content["metrics"]) for r in replies]
        if not rows:
            raise FederationError(f"round {server_round}: all {len(clients)} clients failed in evaluation")
        least = min(len(clients), self.cfg["min_clients"])  # the evaluation sample may be smaller than min_clients
        if len(rows) < least:
            reasons = failure_reasons(failures)
            raise FederationError(
                f"round {server_round}: {len(failures)} of {len(clients)} clients failed in evaluation, {len(rows)} "
                f"evaluated (min_clients={self.cfg['min_clients']}): {reasons}"
            )
        keys = [k for k in ("global_loss", "global_acc", "personalized_loss", "personalized_acc") if k in rows[0]]
        metrics = {f"eval/{k}": mean_metric(rows, k, "num-examples") for k in keys}
        # Non-finite evaluation metrics (e.g. a personalization step that overflows the loss) are logged as they
        # are and the run goes on: the mean is then inf/NaN, the per-client histogram holds the finite values.
        non_finite = sorted(int(r["client-id"]) for r in rows if not all(math.isfinite(float(r[k])) for k in keys))
        if non_finite:
            log.warning("round %d: non-finite evaluation metrics from clients %s", server_round, non_finite)
        metrics["clients/evaluated"] = float(len(rows))
        metrics["clients/eval_non_finite"] = float(len(non_finite))
        metrics["time/eval_compute_total_s"] = sum(float(r["compute-s"]) for r in rows)
        per_client = [float(r["personalized_acc" if "personalized_acc" in r else "personalized_loss"]) for r in rows]
        return metrics, per_client

    def _unsure(self, clients: Iterable[int]) -> None:
        if self.states is not None:
            self.states.unsure(clients)

    def _count_failures(self, server_round: int, phase: str, failures: list[tuple[int, str]]) -> None:
        for cid, reason in failures:
            log.warning("round %d: client %d failed in %s: %s", server_round, cid, phase, reason.strip()[-500:])
        self.history.client_failures += len(failures)

    def _estimate_round_time(self, first: int, total: int) -> None:
        """The exact mode's rounds can take long: measure one local step and say what the run will take, and warn
        where a round would not fit in ``round_timeout_s`` (:mod:`~perfedavg.federation.step_estimate`)."""
        if self.cfg["hessian"]["mode"] != "exact" or not self.algorithm.declaration.uses_hessian or first > total:
            return
        step_s = step_estimate.measure_local_step_s(self.cfg)
        line = step_estimate.slow_round_line(self.cfg, step_s, total - first + 1)
        if line:
            log.info(line)
        warning = step_estimate.timeout_warning(self.cfg, step_s)
        if warning:
            log.warning(warning)

    def _initial_state(self) -> tuple[Weights, int]:
        """The global weights and the first round to run: fresh, or where the checkpoint left off."""
        state = self.resume_state
        if state is None:
            return task.build_model(self.cfg["model"], self.cfg["seed"]).state_dict(), 1
        self.sample_rng.bit_generator.state = state["sample_rng"]
        self.history.rounds = list(state["rounds"])
        self.history.client_failures = int(state["client_failures"])
        if self.states is not None:
            self.states.restore(state)
        log.info("resuming after round %d of %d", state["round"], self.cfg["num_rounds"])
        return state["weights"], int(state["round"]) + 1

    def _checkpoint(self, server_round: int, weights: Weights) -> None:
        """Write the round's checkpoint: everything a resume needs to continue as this run would have."""
        state = {
            "round": server_round,
            "weights": weights,
            "sample_rng": self.sample_rng.bit_generator.state,
            "rounds": self.history.rounds,
            "client_failures": self.history.client_failures,
            "config": self.cfg,
            **(self.states.checkpoint_fields() if self.states is not None else {}),
        }
        try:
            checkpoint.save(self.run_dir, state)
        except OSError as e:  # e.g. the disk is full
            last = checkpoint.checkpoint_path(self.run_dir)
            good = f"round {server_round - 1}" if last.exists() else "none"
            raise FederationError(
                f"round {server_round}: cannot write the checkpoint in {last.parent} ({e.strerror or e}); "
                f"the last good checkpoint there: {good}"
            ) from None
