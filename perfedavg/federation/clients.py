"""The server's side of talking to clients: which node serves which client, the messages of a round, and their
replies sorted into successes and failures (through the engine's :class:`~perfedavg.federation.transport.Transport`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from perfedavg.curvature import Weights
from perfedavg.federation import FederationError
from perfedavg.federation.client_states import ClientStateStore
from perfedavg.federation.stopping import STOP, FederationInterrupted
from perfedavg.federation.transport import Transport

#: How long to wait for every client node before the first round: a simulation's engine registers all its nodes as
#: it starts (Flower's in-memory grid; short of num_clients is a mistake, e.g. `flwr run` with too few simulated
#: SuperNodes), a deployment's SuperNodes connect over the network and may take a while.
SIMULATION_NODE_WAIT_S = 10.0
DEPLOYMENT_NODE_WAIT_S = 120.0
#: How long a simulation's server waits for the engine's node → partition mapping once it sees every node (it comes
#: a moment later; without it the server asks every node, see :meth:`Transport.node_partitions`).
MAPPING_WAIT_S = 5.0


def is_simulation(grid: Grid) -> bool:
    """Whether ``grid`` is Flower's in-memory grid of a simulation running in this process. Its module is looked up,
    not imported: a grid of that class means the module is loaded, and importing it for an in-process run costs about
    0.7 s of start-up (SQLAlchemy, FastAPI)."""
    module = sys.modules.get("flwr.superlink.grid.inmemory_grid")
    return module is not None and isinstance(grid, module.InMemoryGrid)


def node_wait_s(grid: Grid) -> float:
    """:data:`SIMULATION_NODE_WAIT_S` for Flower's in-memory (simulation) grid, else :data:`DEPLOYMENT_NODE_WAIT_S`."""
    return SIMULATION_NODE_WAIT_S if is_simulation(grid) else DEPLOYMENT_NODE_WAIT_S


class ClientChannel:
    """Messages to and replies from the clients of one run. Each message carries the global weights and the resolved
    run config (the client needs no other channel); for a stateful algorithm, ``states`` adds each client's state."""

    def __init__(
        self, grid: Grid, transport: Transport, cfg: Mapping[str, Any], states: ClientStateStore | None = None
    ) -> None:
        self.grid = grid
        self.transport = transport
        self.cfg_json = json.dumps(cfg, sort_keys=True)
        self.num_clients = int(cfg["num_clients"])
        self.timeout = cfg.get("round_timeout_s")
        self.states = states
        self.node_of: dict[int, int] = {}
        self.client_of: dict[int, int] = {}

    def messages(self, clients: Iterable[int], weights: Weights, server_round: int, kind: str) -> list[Message]:
        arrays = ArrayRecord(weights)
        config = ConfigRecord({"round": server_round, "run-config": self.cfg_json})
        return [
            Message(self._content(c, arrays, config), dst_node_id=self.node_of[c], message_type=kind) for c in clients
        ]

    def _content(self, client: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        if self.states is None:
            return RecordDict({"arrays": arrays, "config": config})
        return self.states.content(client, arrays, config)

    def exchange(self, server_round: int, messages: list[Message]) -> tuple[list[Message], list[tuple[int, str]]]:
        """Send, wait for the replies (at most ``round_timeout_s``); return (successful replies sorted by client id,
        [(client id, error reason)]). Messages without a reply by then are abandoned (:meth:`Transport.abandon`:
        under Ray a stuck worker is replaced) and count as failed. A stop signal abandons them too and raises
        :class:`~perfedavg.federation.stopping.FederationInterrupted` (this round is not completed)."""
        replies, pending = self.transport.exchange(self.grid, messages, timeout=self.timeout, stop=STOP)
        if pending:
            self.transport.abandon(pending)
        if STOP.is_set():
            raise FederationInterrupted.now(server_round - 1)
        answered = {r.metadata.src_node_id for r in replies}
        failures = [
            (self.client_of[m.metadata.dst_node_id], f"timeout: no reply within round_timeout_s={self.timeout}")
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

    def discover(self, completed: int = 0) -> None:
        """Map client ids (partition ids) to node ids, so sampling depends on the seed, not on random node ids.
        ``completed``: the rounds done so far (what a stop signal meanwhile reports)."""
        n = self.num_clients
        wait_s = node_wait_s(self.grid)
        deadline = time.monotonic() + wait_s
        nodes = list(self.grid.get_node_ids())
        while len(nodes) < n and time.monotonic() < deadline and not STOP.is_set():
            time.sleep(0.05)
            nodes = list(self.grid.get_node_ids())
        if STOP.is_set():
            raise FederationInterrupted.now(completed)
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
                raise FederationInterrupted.now(completed)
            return
        queries = [Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        replies, pending = self.transport.exchange(self.grid, queries, stop=STOP)
        if STOP.is_set():
            self.transport.abandon(pending)
            raise FederationInterrupted.now(completed)
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
        self.node_of = {cid: node for node, cid in partitions.items()}
        self.client_of = {node: cid for cid, node in self.node_of.items()}
        missing = sorted(set(range(self.num_clients)) - set(self.node_of))
        if missing:
            raise FederationError(f"no node serves client ids {missing[:10]} (num_clients={self.num_clients})")
