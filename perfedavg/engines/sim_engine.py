"""Event-driven message hand-off for Flower's simulation engine, and a grid exchange that uses it.

Flower 1.41's simulation engine moves messages between the server and the client actors with polling threads:
``vce_api.add_messages_to_queue`` looks for new server messages every 0.1 s, and ``InMemoryGrid.send_and_receive``
looks for replies every 0.1 s. Each train or evaluation phase therefore waits up to 0.1 s before any client
starts and up to 0.1 s after the last reply; at a few tens of milliseconds of client work per round that was half
of the round (``scripts/bench_federation.py``).

:func:`install` replaces the two engine threads' loops with the same work driven by events: the server wakes the
pickup thread right after it pushes messages (:func:`exchange`), and the reply thread wakes the server as soon as a
reply is stored. Without a wake-up they fall back to Flower's own 0.1 s period, so nothing can stall. It also
records the engine's node → partition mapping as it registers the nodes (:func:`node_partitions`), so the server
need not ask every node for its client id. The
replacement touches ``flwr.server.superlink.fleet.vce.vce_api`` internals; the project pins flwr < 1.43 and
:func:`install` refuses (leaving Flower untouched) if the functions it replaces are not the expected ones.

It also takes over how Flower's Ray backend runs a message on an actor (:func:`_process_message`), for faults Flower
leaves alone: an actor whose process died (``os._exit``, the kernel's OOM killer) is replaced instead of being put back
into the pool, where every later message sent to it failed and healthy clients were blamed; and the server can
:func:`abandon` messages it stops waiting for (a round's timeout, a stop signal): queued ones are answered with an
error without running, running ones have their actor killed and replaced, so later rounds keep the full pool.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Iterable
from queue import Empty, Queue
from typing import Any

log = logging.getLogger("perfedavg")

#: Set by the server after pushing messages: the engine's pickup thread scans for them at once.
_messages_pushed = threading.Event()
#: Set by the engine's reply thread after storing a reply: the server pulls at once.
_reply_stored = threading.Event()
_FALLBACK_S = 0.1  # Flower's own polling period, used when no event arrives
_installed = False

#: Messages the server no longer waits for (see :func:`abandon`), and the actor running each message now.
_abandoned: set[str] = set()
_running: dict[str, Any] = {}
#: Guards the actor pool, :data:`_abandoned` and :data:`_running`; notified whenever an actor returns to the pool.
_actors_lock = threading.Condition()
#: How often a message waiting for a free actor looks at the stop signal and its own abandonment.
_WAIT_S = 0.1


#: The running simulation's node id → partition id (Flower's ``nodes_mapping``), as its pickup loop received it.
_node_partitions: dict[int, int] = {}


def node_partitions(node_ids: Iterable[int], wait_s: float = 0.0) -> dict[int, int] | None:
    """Partition id of each of ``node_ids`` as the running simulation engine (in this process) assigned them, or
    ``None`` if it does not know them all within ``wait_s`` seconds (another grid: the in-process one, a
    deployment). Lets the server map clients to nodes without a query message per node, which under Ray costs an
    actor call each: minutes for 10,000 clients. (The nodes show in the grid a moment before their registration
    returns the mapping: hence the wait.)"""
    ids = list(node_ids)
    deadline = time.monotonic() + wait_s
    while True:
        known = dict(_node_partitions)
        if ids and all(n in known for n in ids):
            return {n: known[n] for n in ids}
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(left, 0.02))


def _register_nodes(num_nodes: int, state_factory):  # noqa: ANN001, ANN202 - Flower's signature
    """Flower's node registration, recording its node → partition mapping (:func:`node_partitions`)."""
    mapping = _flower_register_nodes(num_nodes=num_nodes, state_factory=state_factory)
    _node_partitions.clear()
    _node_partitions.update(mapping)
    _targeted.clear()  # a new simulation: full scans until its server pushes through exchange()
    with _pushed_lock:
        _pushed_nodes.clear()
    return mapping


_flower_register_nodes = None  # Flower's own, kept by install()


#: Destination nodes of the messages :func:`exchange` pushed and the pickup loop has not looked at yet.
_pushed_nodes: set[int] = set()
_pushed_lock = threading.Lock()
#: Whether :func:`exchange` pushes this run's messages (the project's server does): the pickup loop then looks at
#: their destinations only. Until then it scans every node, as Flower does, for a server that pushes otherwise.
_targeted = threading.Event()


def _add_messages_to_queue(state, queue: Queue, nodes_mapping, f_stop: threading.Event) -> None:  # noqa: ANN001
    """Flower's pickup loop, woken by :func:`exchange` instead of sleeping 0.1 s between scans, and looking only at
    the nodes :func:`exchange` pushed to.

    Flower scans every node of the federation each time, and each node's look-up (``get_message_ins``) walks every
    stored message: with 10,000 nodes and a round's 50 messages in store that is half a million checks per scan, for
    the 50 nodes that have a message. As in Flower, a node gets at most one message per scan (its context is updated
    by one message at a time); a node that got one is looked at again in the next scan, for a second message."""
    while not f_stop.is_set():
        _messages_pushed.clear()  # before scanning: a push during the scan sets it again and is not missed
        if _targeted.is_set():
            with _pushed_lock:
                nodes = [n for n in _pushed_nodes if n in nodes_mapping]
                _pushed_nodes.clear()
        else:
            nodes = list(nodes_mapping.keys())
        again = []
        for node_id in nodes:
            for message in state.get_message_ins(node_id=node_id, limit=1):
                queue.put(message)
                again.append(node_id)
        if again and _targeted.is_set():
            with _pushed_lock:
                _pushed_nodes.update(again)
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
    global _flower_register_nodes
    expected = {
        "add_messages_to_queue": ["state", "queue", "nodes_mapping", "f_stop"],
        "put_message_into_state": ["state", "queue", "f_stop"],
        "_register_nodes": ["num_nodes", "state_factory"],
    }
    for name, params in expected.items():
        fn = getattr(vce_api, name, None)
        if fn is None or list(inspect.signature(fn).parameters) != params:
            log.warning("flwr's simulation engine changed (%s); keeping its polling hand-off", name)
            return False
    vce_api.add_messages_to_queue = _add_messages_to_queue
    vce_api.put_message_into_state = _put_message_into_state
    _flower_register_nodes = vce_api._register_nodes
    vce_api._register_nodes = _register_nodes
    _share_client_app_once()
    _take_over_process_message()
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
        global _backend
        original(self, app_fn)
        import ray

        self.app_fn = ray.put(app_fn)
        _backend = self  # its actor pool exists now (:func:`warm_up_actors`)

    build._perfedavg = True  # type: ignore[attr-defined]
    backend.build = build


def _take_over_process_message() -> None:
    """Run Flower's Ray backend's messages with :func:`_process_message` (see the module's docstring)."""
    from flwr.server.superlink.fleet.vce.backend import raybackend

    backend = raybackend.RayBackend
    if getattr(backend.process_message, "_perfedavg", False):
        return
    if list(inspect.signature(backend.process_message).parameters) != ["self", "message", "context"]:
        log.warning("flwr's Ray backend changed (process_message); dead or stuck Ray workers are not replaced")
        return
    backend.process_message = _process_message


def _error_reply(message, reason: str):  # noqa: ANN001, ANN202 - Flower's Message
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode

    return Message(Error(code=ErrorCode.UNKNOWN, reason=reason), reply_to=message)


def _process_message(self, message, context):  # noqa: ANN001, ANN202 - Flower's RayBackend.process_message
    """Flower's ``RayBackend.process_message`` (run ``message`` on an idle actor of the pool, return the reply and
    the updated context), except that an abandoned message is not run, and an actor that dies (or is killed by
    :func:`abandon`) is replaced by a new one rather than returned to the pool. Either gives an error reply, which the
    server counts as that client's failure; a ClientApp's own exception is raised as in Flower."""
    import ray

    from perfedavg.federation.stopping import STOP

    message_id = message.metadata.message_id
    pool = self.pool
    with _actors_lock:
        while not pool.pool:  # every actor busy, or one being replaced and warmed up (:func:`_replace`)
            if message_id in _abandoned or STOP.is_set():
                break
            _actors_lock.wait(_WAIT_S)
        if message_id in _abandoned:
            return _error_reply(message, "not run: the server stopped waiting for it"), context
        if not pool.pool:
            return _error_reply(message, "not run: the run is stopping"), context
        actor = pool.pool.pop()
        _running[message_id] = actor
    try:
        partition_id = str(context.node_config["partition-id"])
        _, reply, updated_context = ray.get(actor.run.remote(self.app_fn, message, partition_id, context))
    except ray.exceptions.RayActorError as e:
        with _actors_lock:
            _running.pop(message_id, None)
            cut_off = message_id in _abandoned
        if not STOP.is_set():
            _replace(pool)
        if cut_off:
            return _error_reply(message, "cut off: the server stopped waiting for it; its worker was replaced"), context
        log.warning("a Ray worker process died running client %s; a new worker replaces it", partition_id)
        return _error_reply(message, f"its worker process died ({type(e).__name__}); a new worker replaces it"), context
    except BaseException:
        _give_back(pool, actor, message_id)
        raise
    _give_back(pool, actor, message_id)
    return reply, updated_context


def _give_back(pool, actor, message_id: str | None = None) -> None:  # noqa: ANN001 - Flower's actor pool and actor
    """Return ``actor`` to the pool and wake a message waiting for one."""
    with _actors_lock:
        if message_id is not None:
            _running.pop(message_id, None)
        pool.pool.append(actor)
        _actors_lock.notify_all()


def _warm_up(actor_self) -> bool:  # noqa: ANN001 - runs inside the actor (``__ray_call__``)
    """Import what a client's first message needs (torch, the ClientApp), so the first message does not pay for it."""
    import perfedavg.engines.client_app  # noqa: F401

    return True


#: Threads warming up replacement actors, and the signal that Ray is about to shut down (:func:`close`).
_warming: list[threading.Thread] = []
_closing = threading.Event()


def _replace(pool) -> None:  # noqa: ANN001 - Flower's actor pool
    """Start a new actor in place of a dead or killed one, and give it to the pool only once it has started and
    imported the ClientApp: its start-up (seconds on a loaded machine) then never counts against the round timeout
    of a client sent to it. Meanwhile the messages of the round wait for the actors that are up."""
    import ray

    actor = pool.create_actor_fn()
    ready_ref = actor.__ray_call__.remote(_warm_up)

    def warm() -> None:
        while not _closing.is_set():  # polled, so that :func:`close` ends the wait before Ray shuts down
            ready, _ = ray.wait([ready_ref], timeout=_WAIT_S)
            if ready:
                break
        if _closing.is_set():
            return
        try:
            ray.get(ready_ref)
        except Exception as e:  # noqa: BLE001 - a warm-up that fails leaves the actor to fail visibly on first use
            log.debug("warming up a replacement Ray worker failed: %s", e)
        _give_back(pool, actor)

    thread = threading.Thread(target=warm, name="perfedavg-warm-actor", daemon=True)
    with _actors_lock:
        _warming.append(thread)
    thread.start()


#: The running simulation's Ray backend, once it has built its actor pool (None outside a Ray simulation).
_backend = None


def warm_up_actors(stop: threading.Event, wait_s: float) -> int:
    """Have every idle actor of the running Ray backend import what a client needs (:func:`_warm_up`) and wait for
    them (at most ``wait_s`` for the backend to exist; until done or ``stop`` for the warm-up), so that no client's
    first message pays for it within the round's timeout. (The query message each node used to answer at start-up
    did this as a side effect: :func:`node_partitions` made them unnecessary.) Returns how many actors it warmed."""
    import ray

    deadline = time.monotonic() + wait_s
    while _backend is None or getattr(_backend, "pool", None) is None:
        if stop.is_set() or time.monotonic() > deadline:
            return 0
        time.sleep(0.02)
    with _actors_lock:
        actors = list(_backend.pool.pool)
    waiting = [actor.__ray_call__.remote(_warm_up) for actor in actors]
    while waiting and not stop.is_set():
        _, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=_WAIT_S)
    return len(actors)


def close() -> None:
    """End the warm-up waits before Ray shuts down (Ray's API used from a thread during or after its shutdown can
    abort the whole process). Called when the ServerApp returns, before Flower's engine stops Ray."""
    global _backend
    _backend = None
    _closing.set()
    with _actors_lock:
        threads = list(_warming)
        _warming.clear()
    for thread in threads:
        thread.join(timeout=10)
    _closing.clear()


_process_message._perfedavg = True  # type: ignore[attr-defined]


def abandon(message_ids: Iterable[str]) -> int:
    """Stop the work of messages whose replies the server no longer waits for: those not started are answered with
    an error when an actor picks them up; the actors running the others are killed (:func:`_process_message` then
    replaces them). Returns how many actors were killed. Only the Ray backend's actors can be stopped; on another grid
    (in-process, the Deployment Engine) a message already running runs to its end."""
    with _actors_lock:
        ids = set(message_ids)
        _abandoned.update(ids)
        actors = [_running[i] for i in ids if i in _running]
    if actors:
        import ray

        for actor in actors:
            ray.kill(actor, no_restart=True)
    return len(actors)


def exchange(
    grid,  # noqa: ANN001 - a Flower Grid
    messages: Iterable,
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> tuple[list, list[str]]:
    """Push ``messages``, wake the engine, and collect replies until all are in, ``timeout`` seconds have passed, or
    ``stop`` is set. Returns (replies, ids of the messages still without one).

    With the event-driven engine each reply is pulled as soon as it is stored, and on any other grid (the Deployment
    Engine) it polls every 10 ms. A grid with an ``exchange(messages, timeout, stop)`` method of its own (the
    in-process grid, which runs the clients one after another in this thread) applies ``timeout`` to each client and
    watches ``stop`` itself.
    """
    messages = list(messages)
    if getattr(grid, "exchange", None) is not None:  # the in-process grid: its own, as on any grid
        from perfedavg.federation.transport import PollingTransport

        return PollingTransport().exchange(grid, messages, timeout=timeout, stop=stop)
    pending = set(grid.push_messages(messages))
    with _pushed_lock:  # after the push: the pickup loop finds each of these nodes' messages stored
        _pushed_nodes.update(m.metadata.dst_node_id for m in messages)
    _targeted.set()
    _messages_pushed.set()
    deadline = None if timeout is None else time.monotonic() + timeout
    replies = []
    while pending and (deadline is None or time.monotonic() < deadline) and not (stop and stop.is_set()):
        _reply_stored.clear()  # before pulling: a reply stored during the pull sets it again
        got = list(grid.pull_messages(pending))
        replies.extend(got)
        pending.difference_update(r.metadata.reply_to_message_id for r in got)
        if pending:
            _reply_stored.wait(_FALLBACK_S if _installed else 0.01)
    return replies, sorted(pending)


class SimulationTransport:
    """The round loop's :class:`~perfedavg.federation.transport.Transport` on Flower's simulation engine (and any
    other Grid, through :func:`exchange`): event-driven hand-off, abandoned messages cut off, the engine's node
    mapping read directly, Ray actors warmed before the first round."""

    def exchange(self, grid, messages, timeout=None, stop=None):  # noqa: ANN001, ANN201 - Flower's types
        return exchange(grid, messages, timeout=timeout, stop=stop)

    def abandon(self, message_ids: Iterable[str]) -> int:
        return abandon(message_ids)

    def node_partitions(self, node_ids: Iterable[int], wait_s: float = 0.0) -> dict[int, int] | None:
        return node_partitions(node_ids, wait_s=wait_s)

    def warm_up(self, stop: threading.Event, wait_s: float) -> int:
        return warm_up_actors(stop, wait_s=wait_s)


#: The transport the ServerApps give the round loop.
TRANSPORT = SimulationTransport()
