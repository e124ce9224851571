"""How the round loop talks to its clients through a Flower Grid: send messages and collect the replies, give up on
some, and learn which node serves which client. The loop asks these four things of a :class:`Transport`; the
engines provide a faster one for Flower's simulation (:data:`perfedavg.engines.sim_engine.TRANSPORT`), and
:class:`PollingTransport` serves any Grid.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any, Protocol


class Transport(Protocol):
    def exchange(
        self, grid: Any, messages: Iterable[Any], timeout: float | None = None, stop: threading.Event | None = None
    ) -> tuple[list[Any], list[str]]:
        """Send ``messages`` and collect replies until all are in, ``timeout`` seconds have passed or ``stop`` is
        set: (replies, ids of the messages still without one)."""

    def abandon(self, message_ids: Iterable[str]) -> int:
        """Stop the work of messages whose replies the server no longer waits for, where the grid allows it;
        returns how many workers were stopped."""

    def node_partitions(self, node_ids: Iterable[int], wait_s: float = 0.0) -> dict[int, int] | None:
        """node id → client id where the engine knows it without a message per node; ``None``: ask each node."""

    def warm_up(self, stop: threading.Event, wait_s: float) -> int:
        """Prepare the client workers before the first round (what asking each node would have done on the way)."""


class PollingTransport:
    """Any Grid: its own ``exchange(messages, timeout, stop)`` where it has one (the in-process grid), else push
    the messages and pull replies every 10 ms. Nothing to abandon (a message already running runs to its end), no
    node mapping to read, no workers to warm."""

    POLL_S = 0.01

    def exchange(
        self, grid: Any, messages: Iterable[Any], timeout: float | None = None, stop: threading.Event | None = None
    ) -> tuple[list[Any], list[str]]:
        messages = list(messages)
        own = getattr(grid, "exchange", None)
        if own is not None:
            replies = own(messages, timeout, stop)
            answered = {r.metadata.reply_to_message_id for r in replies}
            return replies, [m.metadata.message_id for m in messages if m.metadata.message_id not in answered]
        pending = set(grid.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Any] = []
        while pending and (deadline is None or time.monotonic() < deadline) and not (stop and stop.is_set()):
            got = list(grid.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(r.metadata.reply_to_message_id for r in got)
            if pending:
                time.sleep(self.POLL_S)
        return replies, sorted(pending)

    def abandon(self, message_ids: Iterable[str]) -> int:
        return 0

    def node_partitions(self, node_ids: Iterable[int], wait_s: float = 0.0) -> dict[int, int] | None:
        return None

    def warm_up(self, stop: threading.Event, wait_s: float) -> int:
        return 0
