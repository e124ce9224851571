"""How a stateful algorithm's per-client state (a flat vector ``[P]``, e.g. Ditto's personal model) travels in
Flower records: in messages, in replies and in a node's ``Context.state`` (:mod:`perfedavg.engines.client_app`,
:mod:`perfedavg.federation.loop`)."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

#: ``Context.state`` keys: the state (an ArrayRecord) and the round that produced it (a ConfigRecord ``{"round"}``).
STATE_ARRAYS, STATE_ROUND = "algorithm-state", "algorithm-state-round"


def pack_state(state: torch.Tensor) -> ArrayRecord:
    """A client state ``[P]`` as an ArrayRecord (on the CPU)."""
    return ArrayRecord({"state": state.detach().cpu()})


def unpack_state(record: ArrayRecord, device: torch.device | str = "cpu") -> torch.Tensor:
    """The state ``[P]`` an ArrayRecord of :func:`pack_state` holds, on ``device``."""
    return record.to_torch_state_dict()["state"].to(device)
