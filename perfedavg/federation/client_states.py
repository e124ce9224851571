"""The server's copy of a stateful algorithm's per-client state (Ditto's and Local's own models).

For each client: the state ``[P]`` it last sent (kept for checkpoints), the round that produced it, and whether its
node is known to hold it. A client whose node may not hold it (after a resume, or after the client failed) is sent
its state with the next message; the others only the round of the state they should hold
(:mod:`perfedavg.engines.client_app` checks it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from perfedavg.federation.state_records import pack_state, unpack_state


class ClientStateStore:
    """Per-client states as the clients last sent them. Memory: 4·P bytes per client trained so far (float32)."""

    def __init__(self) -> None:
        self.states: dict[int, torch.Tensor] = {}
        self.rounds: dict[int, int] = {}
        self.synced: set[int] = set()

    def content(self, client: int, arrays: ArrayRecord, config: ConfigRecord) -> RecordDict:
        """A message's records for ``client``: the weights and config, the round of the state it should hold, and
        the state itself where its node may not hold it."""
        own = ConfigRecord({**config, "state-round": self.rounds.get(client, 0)})
        content = RecordDict({"arrays": arrays, "config": own})
        if client in self.states and client not in self.synced:
            content["state"] = pack_state(self.states[client])
        return content

    def received(self, client: int, reply_content: RecordDict, server_round: int) -> None:
        """``client`` sent its new state in round ``server_round``: keep it; its node holds it."""
        self.states[client] = unpack_state(reply_content["state"])
        self.rounds[client] = server_round
        self.synced.add(client)

    def unsure(self, clients: Iterable[int]) -> None:
        """These clients failed (or sent an unusable update): their nodes may not hold the server's state."""
        self.synced.difference_update(clients)

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"client_states": self.states, "state_rounds": self.rounds}

    def restore(self, state: Mapping[str, Any]) -> None:
        """From a checkpoint: the states and their rounds; no node is known to hold one (each is sent again)."""
        self.states = dict(state.get("client_states", {}))
        self.rounds = {int(c): int(r) for c, r in state.get("state_rounds", {}).items()}
        self.synced = set()
