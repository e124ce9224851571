"""A :class:`flwr.serverapp.Grid` that runs a ClientApp in this process: one message after another, or a round's
messages on a pool of threads (``workers`` > 1, :mod:`perfedavg.engines.client_pool`).

No Ray, no SuperLink, no network: the same ServerApp loop and ClientApp handlers, called directly. It serves
``backend=inprocess`` runs (``inprocess_workers`` threads; by default one per core where a client's work pays for
threads, :func:`perfedavg.task.inprocess_workers`), the tests, debugging
(breakpoints inside a client: ``inprocess_workers=1`` runs each client in the main thread) and the federation
benchmark. A handler that raises becomes an error reply, as in Flower's simulation engine. :meth:`InProcessGrid.
exchange` gives each client at most the round's timeout and stops at a stop request, cutting off a client where
Python can: in the main thread :func:`perfedavg.federation.stopping.cut_off_client`, in the pool's threads its own
cut-off (both between bytecodes; a pool thread stuck in one C call is abandoned instead).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from perfedavg.engines.client_pool import ClientPool
from perfedavg.federation import stopping

FIRST_NODE_ID = 1000


class InProcessGrid(Grid):
    """``num_clients`` virtual nodes with ``partition-id`` 0…n−1, served by ``client_app`` in this process:
    ``workers`` clients at a time on a :class:`~perfedavg.engines.client_pool.ClientPool` (1: one after another in
    the calling thread). Results do not depend on ``workers``: each client's randomness is its own and the replies
    come back in message order. :meth:`close` ends the pool's threads."""

    def __init__(self, client_app: ClientApp, num_clients: int, run_id: int = 1, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: must be ≥ 1")
        self.client_app = client_app
        self.workers = workers
        self._pool: ClientPool[Message, Message] | None = None
        self.run_id = run_id
        # Messages take their run and sender from the process's task identity (run_simulation sets it the same way).
        TaskIdentity.run_id = run_id
        TaskIdentity.task_id = 1
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.contexts = {
            FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=FIRST_NODE_ID + i,
                node_config={"partition-id": i, "num-partitions": num_clients},
                state=RecordDict(),
                run_config={},
            )
            for i in range(num_clients)
        }
        self._replies: dict[str, Message] = {}

    # Grid API -------------------------------------------------------------------------------------------------------

    def set_run(self, run) -> None:  # noqa: ANN001 - Flower's Run; nothing to set up here
        pass

    @property
    def run(self):  # noqa: ANN201
        raise NotImplementedError("InProcessGrid has no Flower Run object")

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            self._replies[_with_id(message)] = self._handle(message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))

    # ------------------------------------------------------------------------------------------------------------------

    def exchange(
        self, messages: Iterable[Message], timeout: float | None, stop: threading.Event | None = None
    ) -> list[Message]:
        """Run each message's client, each for at most ``timeout`` seconds from its own start, until ``stop`` is set;
        the replies of those that finished, in message order. The limit is per client (one after another, a round
        may take up to n × ``timeout``); a client past it, or running when ``stop`` is set, is cut off and has no
        reply (one after another: only in the main thread; elsewhere it runs to its end). Called by
        :func:`perfedavg.engines.sim_engine.exchange`."""
        messages = list(messages)
        for message in messages:
            _with_id(message)
        if self.workers > 1:
            if self._pool is None:
                self._pool = ClientPool(self._handle, self.workers)
            return [r for r in self._pool.run(messages, timeout, stop) if r is not None]
        replies = []
        for message in messages:
            if stop is not None and stop.is_set():
                break
            try:
                with stopping.cut_off_client(timeout):
                    reply = self._handle(message)
            except stopping.ClientCutOff:
                continue  # no reply: the server counts it
            replies.append(reply)
        return replies

    def close(self) -> None:
        """End the pool's threads (after their current client); the grid runs one client at a time afterwards."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _handle(self, message: Message) -> Message:
        context = self.contexts[message.metadata.dst_node_id]
        try:
            return self.client_app(message, context)
        except Exception as ex:  # noqa: BLE001 - reported to the server as an error reply, like the simulation engine
            reason = f"{type(ex)}:<'{ex}'>"
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


def _with_id(message: Message) -> str:
    """Give ``message`` a fresh id, as a grid does when it sends one; returns it."""
    message.metadata.__dict__["_message_id"] = str(uuid.uuid4())
    return message.metadata.message_id
