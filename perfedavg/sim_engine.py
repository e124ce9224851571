"""Event-driven message hand-off for Flower's simulation engine, and a grid exchange that uses it.

Flower 1.41's simulation engine moves messages between the server and the client actors with polling threads:
``vce_api.add_messages_to_queue`` looks for new server messages every 0.1 s, and ``InMemoryGrid.send_and_receive``
looks for replies every 0.1 s. Each train or evaluation phase therefore waits up to 0.1 s before any client
starts and up to 0.1 s after the last reply; at a few tens of milliseconds of client work per round that was half
of the round (``scripts/bench_federation.py``).

:func:`install` replaces the two engine threads' loops with the same work driven by events: the server wakes the
pickup thread right after it pushes messages (:func:`exchange`), and the reply thread wakes the server as soon as a
reply is stored. Without a wake-up they fall back to Flower's own 0.1 s period, so nothing can stall. The
replacement touches ``flwr.server.superlink.fleet.vce.vce_api`` internals; the project pins flwr < 1.43 and
:func:`install` refuses (leaving Flower untouched) if the functions it replaces are not the expected ones.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Iterable
from queue import Empty, Queue

log = logging.getLogger("perfedavg")

#: Set by the server after pushing messages: the engine's pickup thread scans for them at once.
_messages_pushed = threading.Event()
#: Set by the engine's reply thread after storing a reply: the server pulls at once.
_reply_stored = threading.Event()
_FALLBACK_S = 0.1  # Flower's own polling period, used when no event arrives
_installed = False


def _add_messages_to_queue(state, queue: Queue, nodes_mapping, f_stop: threading.Event) -> None:  # noqa: ANN001
    """Flower's pickup loop, woken by :func:`exchange` instead of sleeping 0.1 s between scans."""
    while not f_stop.is_set():
        _messages_pushed.clear()  # before scanning: a push during the scan sets it again and is not missed
        for node_id in nodes_mapping.keys():
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
        _messages_pushed.wait(_FALLBACK_S)


def _put_message_into_state(state, queue: Queue, f_stop: threading.Event) -> None:  # noqa: ANN001
    """Flower's reply loop, signalling the server after each stored reply."""
    while not f_stop.is_set():
        try:
            reply = queue.get(timeout=1.0)
        except Empty:
            continue
        state.store_message_res(reply)
        _reply_stored.set()


def install() -> bool:
    """Swap the engine loops for the event-driven ones (idempotent). Returns whether they are in place."""
    global _installed
    if _installed:
        return True
    try:
        from flwr.server.superlink.fleet.vce import vce_api
    except ImportError:
        return False
    expected = {
        "add_messages_to_queue": ["state", "queue", "nodes_mapping", "f_stop"],
        "put_message_into_state": ["state", "queue", "f_stop"],
    }
    for name, params in expected.items():
        fn = getattr(vce_api, name, None)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            log.warning("flwr's simulation engine changed (%s); keeping its polling hand-off", name)
            return False
    vce_api.add_messages_to_queue = _add_messages_to_queue
    vce_api.put_message_into_state = _put_message_into_state
    _share_client_app_once()
    _installed = True
    return True


def _share_client_app_once() -> None:
    """Send the ClientApp loader to Ray's object store once, not with every message.

    Flower's Ray backend passes its ``app_fn`` (a closure, so cloudpickle serialises it by value, scanning all of
    ``sys.modules`` each time) as an argument of every actor call; in a py-spy profile of the driver with clients
    that answer at once it was the largest part of the driver's per-message work. Storing it once with ``ray.put``
    and passing the reference gives the actor the same function (Ray resolves top-level references before the call).
    """
    from flwr.server.superlink.fleet.vce.backend import raybackend

    backend = raybackend.RayBackend
    if getattr(backend.build, "_perfedavg", False):
        return
    original = backend.build
    if list(inspect.signature(original).parameters) != ["self", "app_fn"]:
        log.warning("flwr's Ray backend changed (build); its app loader is sent with every message")
        return

    def build(self, app_fn):  # noqa: ANN001, ANN202 - Flower's signature
        original(self, app_fn)
        import ray

        self.app_fn = ray.put(app_fn)

    build._perfedavg = True  # type: ignore[attr-defined]
    backend.build = build


def exchange(grid, messages: Iterable, timeout: float | None = None) -> list:  # noqa: ANN001
    """Push ``messages``, wake the engine, and collect every reply (or stop at ``timeout`` seconds).

    Same contract as ``Grid.send_and_receive``; with the event-driven engine each reply is pulled as soon as it is
    stored, and on any other grid (the Deployment Engine) it polls every 10 ms.
    """
    pending = set(grid.push_messages(list(messages)))
    _messages_pushed.set()
    deadline = None if timeout is None else time.monotonic() + timeout
    replies = []
    while pending and (deadline is None or time.monotonic() < deadline):
        _reply_stored.clear()  # before pulling: a reply stored during the pull sets it again
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(r.metadata.reply_to_message_id for r in got)
        if pending:
            _reply_stored.wait(_FALLBACK_S if _installed else 0.01)
    return replies
