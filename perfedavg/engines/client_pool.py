"""Run a round's client handlers on a pool of threads in this process, each client within its own time limit.

PyTorch releases the GIL inside its kernels, so clients of small models computing in parallel Python threads, one
intra-op thread each (``client_cpus``), use the machine's cores where one client at a time with several intra-op
threads cannot (issue 37's probe: 1.43× from the second core of a 2-core machine, against 1.14× from a second
intra-op thread). Used by :class:`perfedavg.engines.inprocess_grid.InProcessGrid` when it has more than one worker.

What a round may rely on, as with one client after another:

- **Replies in message order**, whatever order the clients finish in (the round loop also sorts them by client).
- **A time limit per client**, counted from when that client starts: past it the client is cut off between two
  Python bytecodes (:class:`~perfedavg.federation.stopping.ClientCutOff` raised inside its thread, as SIGALRM does
  in the main thread). A client stuck inside one C call (``time.sleep``, one huge matrix product) cannot be cut
  off there: its thread is **abandoned** instead — the round goes on without its reply, a fresh thread takes its
  place, and the old one ends on its own when the call returns, its reply discarded.
- **A stop request** (:data:`~perfedavg.federation.stopping.STOP`, set by Ctrl-C or SIGTERM in the main thread) cuts
  off the running clients the same way and leaves the clients not yet started unstarted.

Cost: one model per thread (:func:`perfedavg.engines.client_app._worker`; a few MB for the shipped models) and each
running client's working memory; an exact Hessian's budget is shared by the workers
(:func:`perfedavg.task.concurrent_clients`).
"""

from __future__ import annotations

import ctypes
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from perfedavg.federation.stopping import ClientCutOff

Job = TypeVar("Job")
Reply = TypeVar("Reply")

#: How often the waiting thread checks deadlines and stop requests while no client finishes, in seconds.
POLL_S = 0.05

_serial = itertools.count()


def _raise_in(thread_id: int, exception: type[BaseException] | None) -> None:
    """Ask the interpreter to raise ``exception`` in thread ``thread_id`` at its next bytecode (``None``: withdraw a
    request not yet delivered)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception is not None else None
    )


@dataclass(eq=False)
class _Task(Generic[Job, Reply]):
    job: Job
    thread_id: int | None = None  # the thread running it, once started
    started: float | None = None  # time.monotonic() at its start
    done: bool = False  # finished (with a reply or an error) or cut off: nothing more comes from it
    cut: bool = False  # cut off or never started: its reply, if one ever comes, is discarded
    reply: Reply | None = None


@dataclass(eq=False)
class _Round:
    """The state one :meth:`ClientPool.run` shares with the threads: its tasks and the condition they signal."""

    tasks: list[_Task]
    changed: threading.Condition = field(default_factory=threading.Condition)

    def finished(self) -> bool:
        return all(t.done for t in self.tasks)


class ClientPool(Generic[Job, Reply]):
    """``workers`` daemon threads that call ``handle(job)``; :meth:`run` gives them a round's jobs and waits.

    ``handle`` returns the reply or raises :class:`ClientCutOff` (a cut-off client: no reply); any other failure
    is ``handle``'s to turn into a reply."""

    def __init__(self, handle: Callable[[Job], Reply], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers={workers}: must be ≥ 1")
        self.handle = handle
        self.workers = workers
        self._queue: queue.SimpleQueue[tuple[_Round, _Task] | None] = queue.SimpleQueue()
        self._threads: set[threading.Thread] = set()
        self._retired: set[threading.Thread] = set()  # cut off: they end once their client sees the exception
        self._lock = threading.Lock()  # guards every task's done/cut/thread_id and the thread set
        self.cut_offs = 0  # clients cut off, each thread replaced by a fresh one (for tests)
        self._closed = False

    # -- the waiting side ------------------------------------------------------------------------------------------

    def run(
        self, jobs: Sequence[Job], timeout: float | None = None, stop: threading.Event | None = None
    ) -> list[Reply | None]:
        """Each job's reply, in the order of ``jobs``; ``None`` for a job cut off (past ``timeout`` seconds from its
        start, or running when ``stop`` was set) or never started (``stop`` set before)."""
        if self._closed:
            raise RuntimeError("the client pool is closed")
        current = _Round([_Task(job) for job in jobs])
        self._top_up()
        for task in current.tasks:
            self._queue.put((current, task))
        with current.changed:
            while not current.finished():
                stopping = stop is not None and stop.is_set()
                wait = self._enforce(current, timeout, stopping)
                if current.finished():
                    break
                current.changed.wait(POLL_S if wait is None else max(min(wait, POLL_S), 1e-3))
        return [None if t.cut else t.reply for t in current.tasks]

    def _enforce(self, current: _Round, timeout: float | None, stopping: bool) -> float | None:
        """Cut off the tasks past their time (all running ones when ``stopping``; unstarted ones are dropped then);
        returns the seconds to the next deadline (None: none). Called with ``current.changed`` held."""
        now, next_deadline = time.monotonic(), None
        if stopping:  # first drop the unstarted ones: a thread that replaces a cut-off one must find nothing to start
            with self._lock:
                for task in current.tasks:
                    if task.started is None and not task.done:
                        task.cut = task.done = True
        for task in current.tasks:
            with self._lock:
                if task.done or task.started is None:  # finished, or not started: its time has not begun
                    continue
                left = None if timeout is None else task.started + timeout - now
                if stopping or (left is not None and left <= 0):
                    self._cut_off(task)
                elif left is not None:
                    next_deadline = left if next_deadline is None else min(next_deadline, left)
        return next_deadline

    def _cut_off(self, task: _Task) -> None:
        """End a running task now (``self._lock`` held): raise :class:`ClientCutOff` inside its thread, and give up
        on the thread, whose place a fresh one takes: if it is in a C call it will see the exception only later."""
        task.cut = task.done = True
        assert task.thread_id is not None
        _raise_in(task.thread_id, ClientCutOff)
        cut = {t for t in self._threads if t.ident == task.thread_id}
        self._threads -= cut
        self._retired = {t for t in self._retired if t.is_alive()} | cut  # the ended ones need no waiting for
        self.cut_offs += 1
        self._top_up(locked=True)

    # -- the threads -----------------------------------------------------------------------------------------------

    def _top_up(self, locked: bool = False) -> None:
        """Start threads until ``workers`` serve the queue (a cut-off thread no longer counts)."""
        if not locked:
            with self._lock:
                self._top_up(locked=True)
            return
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._serve, name=f"perfedavg-client-{next(_serial)}", daemon=True)
            self._threads.add(thread)
            thread.start()

    def _serve(self) -> None:
        me = threading.get_ident()
        while True:
            item = self._queue.get()
            if item is None:  # close()
                return
            current, task = item
            with self._lock:
                dropped = task.done  # by a stop request, before it started
                if not dropped:
                    task.thread_id, task.started = me, time.monotonic()
            if dropped:
                self._notify(current)  # never while holding the lock: the waiting side holds the condition first
                continue
            reply = None
            try:
                reply = self.handle(task.job)
            except ClientCutOff:
                pass
            if self._finish(current, task, reply, me):
                return  # a cut-off thread: a fresh one serves in its place

    def _finish(self, current: _Round, task: _Task, reply: Reply | None, me: int) -> bool:
        """Record ``task``'s reply unless it was cut off, withdraw any cut-off request not yet delivered to this
        thread, and wake the waiting side; returns whether this thread was given up on (it then ends)."""
        while True:
            try:
                with self._lock:
                    retired = task.cut
                    if not task.done:
                        task.reply, task.done = reply, True
                    _raise_in(me, None)  # a cut-off decided after the handler returned: nothing left to stop
                break
            except ClientCutOff:  # delivered between the handler's return and the lock: the record is still due
                continue
        self._notify(current)
        return retired

    @staticmethod
    def _notify(current: _Round) -> None:
        with current.changed:
            current.changed.notify_all()

    def close(self, wait_s: float = 5.0) -> None:
        """End the threads after their current job, and wait up to ``wait_s`` seconds in all for them and for the
        cut-off ones to end (idle threads end at once, a cut-off one at its client's next bytecode). A thread that
        ends while the interpreter shuts down can abort the process inside a torch call ("terminate called without
        an active exception"), hence the wait; one still inside a C call after it (a client asleep) is a daemon
        thread and does not hold up the exit."""
        self._closed = True
        with self._lock:
            threads, self._threads = list(self._threads), set()
            retired, self._retired = list(self._retired), set()
            for _ in threads:
                self._queue.put(None)
        deadline = time.monotonic() + wait_s
        for thread in threads + retired:
            thread.join(max(0.0, deadline - time.monotonic()))
