"""The server's round loop over any Flower :class:`~flwr.serverapp.Grid`: client sampling, aggregation, evaluation
rounds, TensorBoard, checkpoints and progress output.

No client math here (clients run :mod:`perfedavg.algorithms` through :mod:`perfedavg.engines.client_app`; the server's
side of an algorithm is its :meth:`~perfedavg.algorithms.base.Algorithm.server_update`) and no Flower entry point:
:mod:`perfedavg.engines.server_app` wraps :func:`run_and_record` for the simulation and for ``flwr run``, the tests
drive it on an in-process grid.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from perfedavg import algorithms, checkpoint, task
from perfedavg.config import clients_per_round
from perfedavg.curvature import Weights, diagnostics
from perfedavg.federation import step_estimate
from perfedavg.federation.console import eta_seconds, progress_line
from perfedavg.federation.state_records import pack_state, unpack_state
from perfedavg.federation.stopping import STOP, FederationInterrupted
from perfedavg.federation.transport import PollingTransport, Transport

log = logging.getLogger("perfedavg")

#: How long to wait for every client node before the first round: a simulation's engine registers all its nodes as
#: it starts (Flower's in-memory grid; short of num_clients is a mistake, e.g. `flwr run` with too few simulated
#: SuperNodes), a deployment's SuperNodes connect over the network and may take a while.
SIMULATION_NODE_WAIT_S = 10.0
DEPLOYMENT_NODE_WAIT_S = 120.0
#: How long a simulation's server waits for the engine's node → partition mapping once it sees every node (it comes
#: a moment later; without it the server asks every node, see :meth:`Transport.node_partitions`).
MAPPING_WAIT_S = 5.0


def is_simulation(grid: Grid) -> bool:
    """Whether ``grid`` is Flower's in-memory grid of a simulation running in this process."""
    from flwr.superlink.grid import InMemoryGrid

    return isinstance(grid, InMemoryGrid)


def node_wait_s(grid: Grid) -> float:
    """:data:`SIMULATION_NODE_WAIT_S` for Flower's in-memory (simulation) grid, else :data:`DEPLOYMENT_NODE_WAIT_S`."""
    return SIMULATION_NODE_WAIT_S if is_simulation(grid) else DEPLOYMENT_NODE_WAIT_S


class FederationError(RuntimeError):
    """The federation cannot go on (e.g. every sampled client failed in a round)."""


# ----------------------------------------------------------------------------------------------------------------
# Pure pieces (no grid): sampling, aggregation, metric averaging
# ----------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------
# The round loop
# ----------------------------------------------------------------------------------------------------------------


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
        self.grid = grid
        self.transport: Transport = transport or PollingTransport()
        self.resume_state = resume_state
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.tracker = tracker
        self.cfg_json = json.dumps(cfg, sort_keys=True)
        self.sample_rng = np.random.default_rng([cfg["seed"], 1])
        self.eval_rng = np.random.default_rng([cfg["seed"], 2])
        self.history = History()
        self.node_of: dict[int, int] = {}
        self.client_of: dict[int, int] = {}
        self.round_histograms: dict[str, list[float]] = {}  # this round's per-client values besides evaluation's
        self.completed = int(resume_state["round"]) if resume_state else 0  # the last checkpointed round
        self.algorithm = algorithms.get(cfg["algorithm"]["name"])
        self.spec = task.local_spec(cfg)
        # A stateful algorithm's per-client states as the clients last sent them (for checkpoints), the round of
        # each, and the clients whose nodes are known to hold that state (the others are sent it: after a resume,
        # or after the client failed). See perfedavg.engines.client_app.
        self.client_states: dict[int, torch.Tensor] = {}
        self.state_rounds: dict[int, int] = {}
        self.synced: set[int] = set()

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _messages(self, clients: Iterable[int], weights: Weights, server_round: int, kind: str) -> list[Message]:
        arrays = ArrayRecord(weights)
        config = ConfigRecord({"round": server_round, "run-config": self.cfg_json})
        return [
            Message(self._content(c, arrays, config), dst_node_id=self.node_of[c], message_type=kind) for c in clients
        ]

    def _content(self, client: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        """A message's records: the weights and config, and for a stateful algorithm the round of the state the
        client should hold, with the state itself where its node may not hold it."""
        if not self.algorithm.stateful:
            return RecordDict({"arrays": arrays, "config": config})
        own = ConfigRecord({**config, "state-round": self.state_rounds.get(client, 0)})
        content = RecordDict({"arrays": arrays, "config": own})
        if client in self.client_states and client not in self.synced:
            content["state"] = pack_state(self.client_states[client])
        return content

    def _exchange(self, server_round: int, messages: list[Message]) -> tuple[list[Message], list[tuple[int, str]]]:
        """Send, wait for the replies (at most ``round_timeout_s``); return (successful replies, [(client id, error
        reason)]). Messages without a reply by then are abandoned (:meth:`Transport.abandon`: under Ray a stuck
        worker is replaced) and count as failed. A stop signal abandons them too and raises
        :class:`~perfedavg.federation.stopping.FederationInterrupted` (this round is not completed)."""
        timeout = self.cfg.get("round_timeout_s")
        replies, pending = self.transport.exchange(self.grid, messages, timeout=timeout, stop=STOP)
        if pending:
            self.transport.abandon(pending)
        if STOP.is_set():
            raise FederationInterrupted.now(server_round - 1)
        answered = {r.metadata.src_node_id for r in replies}
        failures = [
            (self.client_of[m.metadata.dst_node_id], f"timeout: no reply within round_timeout_s={timeout}")
            for m in messages
            if m.metadata.dst_node_id not in answered
        ]
        ok = []
        # Replies come in completion order; floating-point sums depend on order, so fix it: by client id.
        for reply in sorted(replies, key=lambda r: self.client_of.get(r.metadata.src_node_id, -1)):
            if reply.has_error():
                failures.append((self.client_of.get(reply.metadata.src_node_id, -1), str(reply.error.reason)))
            else:
                ok.append(reply)
        return ok, failures

    def discover_clients(self) -> None:
        """Map client ids (partition ids) to node ids, so sampling depends on the seed, not on random node ids."""
        n = int(self.cfg["num_clients"])
        wait_s = node_wait_s(self.grid)
        deadline = time.monotonic() + wait_s
        nodes = list(self.grid.get_node_ids())
        while len(nodes) < n and time.monotonic() < deadline and not STOP.is_set():
            time.sleep(0.05)
            nodes = list(self.grid.get_node_ids())
        if STOP.is_set():
            raise FederationInterrupted.now(self.completed)
        if len(nodes) < n:
            raise FederationError(
                f"only {len(nodes)} of num_clients={n} client nodes (SuperNodes, one per client) connected in "
                f"{wait_s:.0f} s"
            )
        # The simulation engine's own mapping where it is in this process: no message per node.
        known = self.transport.node_partitions(nodes, wait_s=MAPPING_WAIT_S) if is_simulation(self.grid) else None
        if known is not None:
            self._map_clients(known)
            self.transport.warm_up(STOP, wait_s=SIMULATION_NODE_WAIT_S)  # what the queries did on the way
            if STOP.is_set():
                raise FederationInterrupted.now(self.completed)
            return
        queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        replies, pending = self.transport.exchange(self.grid, queries, stop=STOP)
        if STOP.is_set():
            self.transport.abandon(pending)
            raise FederationInterrupted.now(self.completed)
        partitions: dict[int, int] = {}
        for reply in replies:
            if reply.has_error():
                raise FederationError(
                    f"node {reply.metadata.src_node_id} failed to report its client id: {reply.error.reason}"
                )
            partitions[reply.metadata.src_node_id] = int(reply.content["info"]["partition-id"])
        self._map_clients(partitions)

    def _map_clients(self, partitions: Mapping[int, int]) -> None:
        """Record which node serves each client id (``partitions``: node id → partition id)."""
        n = int(self.cfg["num_clients"])
        self.node_of = {cid: node for node, cid in partitions.items()}
        self.client_of = {node: cid for cid, node in self.node_of.items()}
        missing = sorted(set(range(n)) - set(self.node_of))
        if missing:
            raise FederationError(f"no node serves client ids {missing[:10]} (num_clients={n})")

    def _count_failures(self, server_round: int, phase: str, failures: list[tuple[int, str]]) -> None:
        for cid, reason in failures:
            log.warning("round %d: client %d failed in %s: %s", server_round, cid, phase, reason.strip()[-500:])
        self.history.client_failures += len(failures)

    # -- rounds --------------------------------------------------------------------------------------------------

    def train_round(self, server_round: int, weights: Weights) -> tuple[Weights, dict[str, float]]:
        clients = sample_clients(self.sample_rng, self.cfg["num_clients"], self.cfg["fraction"])
        replies, failures = self._exchange(
            server_round, self._messages(clients, weights, server_round, MessageType.TRAIN)
        )
        self._count_failures(server_round, "training", failures)
        self.synced.difference_update(cid for cid, _ in failures)
        updates, rows, non_finite = [], [], 0
        for reply in replies:
            update = reply.content["arrays"].to_torch_state_dict()
            row = dict(reply.content["metrics"])
            if not (all_finite(update) and math.isfinite(row["train-loss"])):
                log.warning("round %d: client %d sent a non-finite update; excluded", server_round, row["client-id"])
                failures.append((int(row["client-id"]), "non-finite update"))
                self.history.client_failures += 1
                non_finite += 1
                self.synced.discard(int(row["client-id"]))  # its node moved on; the server's copy did not
                continue
            updates.append(update)
            rows.append(row)
            if self.algorithm.stateful:
                cid = int(row["client-id"])
                self.client_states[cid] = unpack_state(reply.content["state"])
                self.state_rounds[cid] = server_round
                self.synced.add(cid)
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
        metrics.update(self._diagnostics(rows))
        return new, metrics

    def _diagnostics(self, rows: Sequence[Mapping[str, float]]) -> dict[str, float]:
        """The client mean of each diagnostic the clients sent (``curvature/…``; NaN values left out, NaN if all
        are) and their mean cost ``time/diagnostics_s``; the per-client values go to :attr:`round_histograms`."""
        out: dict[str, float] = {}
        for name in diagnostics.NAMES:
            tag = diagnostics.TAG_PREFIX + name
            values = [float(r[tag]) for r in rows if tag in r]
            if not values:
                continue
            finite = [v for v in values if math.isfinite(v)]
            out[tag] = sum(finite) / len(finite) if finite else math.nan
            # Its own tag: TensorBoard's default loader drops a tag written both as a scalar and a histogram.
            self.round_histograms[tag + "_per_client"] = values  # the histogram leaves out non-finite values itself
        diagnosed = [r for r in rows if "diagnostics-s" in r]
        if diagnosed:
            out["time/diagnostics_s"] = mean_metric(diagnosed, "diagnostics-s")
        return out

    def evaluate_round(self, server_round: int, weights: Weights) -> tuple[dict[str, float], list[float]]:
        clients = sample_clients(self.eval_rng, self.cfg["num_clients"], self.cfg["eval_fraction"])
        replies, failures = self._exchange(
            server_round, self._messages(clients, weights, server_round, MessageType.EVALUATE)
        )
        self._count_failures(server_round, "evaluation", failures)
        self.synced.difference_update(cid for cid, _ in failures)
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

    def _initial_state(self) -> tuple[Weights, int]:
        """The global weights and the first round to run: fresh, or where the checkpoint left off."""
        state = self.resume_state
        if state is None:
            return task.build_model(self.cfg["model"], self.cfg["seed"]).state_dict(), 1
        self.sample_rng.bit_generator.state = state["sample_rng"]
        self.eval_rng.bit_generator.state = state["eval_rng"]
        self.history.rounds = list(state["rounds"])
        self.history.client_failures = int(state["client_failures"])
        self.client_states = dict(state.get("client_states", {}))
        self.state_rounds = {int(c): int(r) for c, r in state.get("state_rounds", {}).items()}
        log.info("resuming after round %d of %d", state["round"], self.cfg["num_rounds"])
        return state["weights"], int(state["round"]) + 1

    def _checkpoint(self, server_round: int, weights: Weights) -> None:
        try:
            self._save_checkpoint(server_round, weights)
        except OSError as e:  # e.g. the disk is full
            last = checkpoint.checkpoint_path(self.run_dir)
            good = f"round {server_round - 1}" if last.exists() else "none"
            raise FederationError(
                f"round {server_round}: cannot write the checkpoint in {last.parent} ({e.strerror or e}); "
                f"the last good checkpoint there: {good}"
            ) from None

    def _save_checkpoint(self, server_round: int, weights: Weights) -> None:
        checkpoint.save(
            self.run_dir,
            {
                "round": server_round,
                "weights": weights,
                "sample_rng": self.sample_rng.bit_generator.state,
                "eval_rng": self.eval_rng.bit_generator.state,
                "rounds": self.history.rounds,
                "client_failures": self.history.client_failures,
                "config": self.cfg,
                **(
                    {"client_states": self.client_states, "state_rounds": self.state_rounds}
                    if self.algorithm.stateful
                    else {}
                ),
            },
        )

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        started = time.perf_counter()
        timeline = {"server_start": time.time()}
        self.discover_clients()
        timeline["first_round_start"] = time.time()
        weights, first = self._initial_state()
        total = int(cfg["num_rounds"])
        uses_hessian = algorithms.declaration_of(cfg["algorithm"]["name"]).uses_hessian
        if cfg["hessian"]["mode"] == "exact" and uses_hessian and first <= total:
            step_s = step_estimate.measure_local_step_s(cfg)
            line = step_estimate.slow_round_line(cfg, step_s, total - first + 1)
            if line:
                log.info(line)
            warning = step_estimate.timeout_warning(cfg, step_s)
            if warning:
                log.warning(warning)
        round_times: list[float] = []  # this process's rounds, for the ETA
        for server_round in range(first, total + 1):
            if STOP.is_set():
                raise FederationInterrupted.now(self.completed)
            t0 = time.perf_counter()
            self.round_histograms = {}
            weights, metrics = self.train_round(server_round, weights)
            metrics["time/train_s"] = time.perf_counter() - t0
            if not all_finite(weights):
                raise FederationError(
                    f"round {server_round}: the aggregated global model is not finite; the run diverged "
                    f"(try smaller step sizes: alpha={cfg['alpha']}, beta={cfg['beta']})"
                )
            per_client: list[float] = []
            if server_round % cfg["eval_every"] == 0 or server_round == total:
                t1 = time.perf_counter()
                eval_metrics, per_client = self.evaluate_round(server_round, weights)
                metrics.update(eval_metrics)
                metrics["time/eval_s"] = time.perf_counter() - t1
            metrics["time/round_s"] = time.perf_counter() - t0
            self.history.rounds.append({"round": server_round, **metrics})
            if self.tracker is not None:
                self.tracker.scalars(server_round, metrics)
                tag = (
                    "eval/personalized_acc_per_client"
                    if "eval/personalized_acc" in metrics
                    else "eval/personalized_loss_per_client"
                )
                self.tracker.histogram(tag, per_client, server_round)
                for tag, values in self.round_histograms.items():
                    self.tracker.histogram(tag, values, server_round)
            round_times.append(metrics["time/round_s"])
            log.info(progress_line(server_round, total, metrics, eta_seconds(round_times, server_round, total)))
            self._checkpoint(server_round, weights)
            self.completed = server_round
        summary = {
            "final": self.history.final(),
            "rounds": self.history.rounds,
            "client_failures": self.history.client_failures,
            "wall_s": time.perf_counter() - started,
            "timeline": {**timeline, "end": time.time()},
        }
        return summary
