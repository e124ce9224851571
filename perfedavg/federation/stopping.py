"""Stopping a run on request (Ctrl-C, SIGTERM) and cutting off a client that runs too long in this process.

The run's process installs :func:`stop_on_signals` in its main thread. The first SIGINT or SIGTERM does not raise
there (under Ray the main thread is inside Flower's engine, where an exception leaves threads behind); it sets
:data:`STOP`, which the round loop (:mod:`perfedavg.federation.loop`) reads while it waits for replies and between
rounds: it stops waiting, cancels the round's outstanding messages and raises :class:`FederationInterrupted`, so the
server ends normally, Flower shuts its engine and Ray down, and the CLI exits 128 + the signal's number. The last
completed round's checkpoint is untouched (a round is checkpointed only once complete). A second signal exits at
once.

A client that runs in the main thread (``backend=inprocess``) can be cut off between two Python bytecodes with
:func:`cut_off_client`: on the round's deadline (SIGALRM) or on a stop signal, :class:`ClientCutOff` is raised
inside it. A client stuck inside one C call (a single huge matrix product) is cut off only when that call returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger("perfedavg")

#: Set by the first SIGINT/SIGTERM: the run stops at the next chance, keeping its last completed round.
STOP = threading.Event()
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals received, first first
_active = False  # inside stop_on_signals
_client_running = False  # a client is running in the main thread and may be cut off (see cut_off_client)


class FederationInterrupted(Exception):
    """The run stopped on a signal; ``completed`` rounds are checkpointed (0: none)."""

    def __init__(self, completed: int, signum: int) -> None:
        self.completed = completed
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} after round {completed}")

    @classmethod
    def now(cls, completed: int) -> FederationInterrupted:
        """The interruption by the signal received (:func:`stop_signal`)."""
        return cls(completed, stop_signal())

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130 Ctrl-C, 143 SIGTERM)."""
        return 128 + self.signum


class ClientCutOff(BaseException):
    """Raised inside a client running in the main thread when its time is up or a stop signal came.

    A ``BaseException``, so that a client's own ``except Exception`` cannot swallow it."""


def stop_signal() -> int:
    """The first stop signal received (SIGINT when :data:`STOP` was set without one, e.g. by a test)."""
    return _received[0] if _received else int(signal.SIGINT)


#: How long a round that failed outside the main thread waits for a stop signal that may have caused it.
SIGNAL_GRACE_S = 2.0


def stopping_caused_it() -> bool:
    """Whether a round that just failed was ended by a stop signal. A signal sent to the whole process group (a
    terminal's Ctrl-C, a batch scheduler's SIGTERM) also ends Ray's workers, and their failures can reach the round
    loop's thread before the main thread has run the handler that sets :data:`STOP`: outside the main thread, wait up
    to :data:`SIGNAL_GRACE_S` for it (a failure without a signal is reported that much later). In the main thread
    the handler has already run."""
    if threading.current_thread() is threading.main_thread():
        return STOP.is_set()
    return STOP.wait(SIGNAL_GRACE_S)


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    if STOP.is_set():  # the second one: no more waiting
        log.warning("%s again: exiting now", signal.Signals(signum).name)
        logging.shutdown()
        kill_leftovers()
        os._exit(128 + signum)
    STOP.set()
    log.warning(
        "%s: stopping; the last completed round's checkpoint is kept (the same signal again exits at once)",
        signal.Signals(signum).name,
    )
    if _client_running:
        raise ClientCutOff("interrupted")


def _processes() -> list[tuple[int, int, int, str]]:
    """``(pid, ppid, pgid, command line)`` of every live process this user can see (Linux ``/proc``; elsewhere
    none). A zombie (ended, not yet reaped by its parent) is not live: it runs nothing and holds no memory."""
    found = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, …
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended meanwhile
            continue
        if fields[0] != b"Z":
            found.append((int(entry.name), int(fields[1]), int(fields[2]), command))
    return found


def leftovers(pid: int | None = None, ray_only: bool = False) -> list[int]:
    """What an immediate exit of ``pid`` (default: this process) would leave running: its descendants (only the Ray
    ones with ``ray_only``), and the Ray processes of its process group that have already lost their parent (Ray's
    agents, once the signal that reached the whole group has ended the raylet that started them)."""
    pid = os.getpid() if pid is None else pid
    table = _processes()
    pgid = os.getpgid(pid)
    children: dict[int, list[int]] = {}
    for child, parent, _, _ in table:
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    group = {p for p, _, g, _ in table if g == pgid}
    # lost their parent: re-parented to init or to a subreaper outside the group
    orphans = {p for p, parent, g, command in table if g == pgid and parent not in group and _is_ray(command)}
    if ray_only:
        commands = {p: command for p, _, _, command in table}
        found = {p for p in found if _is_ray(commands[p])}
    return sorted((found | orphans) - {pid})


def _is_ray(command: str) -> bool:
    """A Ray process by its command line: a worker or agent (``ray::…`` titles) or a program of the installed ``ray``
    package (raylet, GCS, dashboard). Not any command that merely contains "ray" (a path like /home/ray/…)."""
    return command.startswith("ray::") or f"site-packages{os.sep}ray{os.sep}" in command


def kill_leftovers() -> None:
    """SIGKILL :func:`leftovers`: before an immediate exit (the second stop signal), so that no Ray process of this
    run outlives it. Best effort: a process that ended meanwhile, or one not ours to kill, is skipped."""
    for leftover in leftovers():
        with contextlib.suppress(OSError):
            os.kill(leftover, signal.SIGKILL)


#: How long a stopped run waits, on its way out, for its Ray processes to end before it kills them.
LEFTOVER_GRACE_S = 5.0


def end_leftovers(grace_s: float = LEFTOVER_GRACE_S) -> list[int]:
    """On the way out of a stopped Ray run, after Ray was shut down: wait up to ``grace_s`` for the Ray processes
    among :func:`leftovers` to end (a signal sent to the whole group reaches Ray's workers too, but a worker busy with
    a client, niced and on a loaded machine, can take seconds to act on it), then SIGKILL those still running, so
    that none outlives the run. Processes that are not Ray's (a notebook's own children) are never touched. Returns
    the processes killed (none, usually). Cost: a scan of ``/proc`` every 0.1 s while any is left."""
    deadline = time.monotonic() + grace_s
    left = leftovers(ray_only=True)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers(ray_only=True)
    for leftover in left:
        with contextlib.suppress(OSError):
            os.kill(leftover, signal.SIGKILL)
    if left:
        log.warning("%d process(es) of this run still running %g s after the stop: killed", len(left), grace_s)
    return left


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM set :data:`STOP` (see the module's docstring); outside the main thread
    (where Python cannot install handlers) nothing changes. :data:`STOP` is cleared on entry and on exit (a stop
    request ends with the run it stopped), and the previous handlers are put back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _active
    STOP.clear()
    _received.clear()
    previous = {s: signal.signal(s, _on_stop_signal) for s in _STOP_SIGNALS}
    _active = True
    try:
        yield
    finally:
        _active = False
        for s, handler in previous.items():
            signal.signal(s, handler)
        STOP.clear()
        _received.clear()


def take_signals_back() -> None:
    """Install this module's SIGINT/SIGTERM handler again inside :func:`stop_on_signals` (main thread): ``ray.init``
    puts a C-level handler of its own on SIGTERM that aborts the process (exit 134, workers left behind)."""
    if _active and threading.current_thread() is threading.main_thread():
        for s in _STOP_SIGNALS:
            signal.signal(s, _on_stop_signal)


def _on_deadline(signum: int, frame: FrameType | None) -> None:
    if _client_running:
        raise ClientCutOff("timeout")


@contextlib.contextmanager
def cut_off_client(seconds: float | None) -> Iterator[None]:
    """Run a client in the block; in the main thread, :class:`ClientCutOff` is raised inside it after ``seconds``
    (``None``: no limit) or on a stop signal. Elsewhere the block runs unguarded."""
    global _client_running
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _on_deadline) if seconds is not None else None
    _client_running = True
    try:
        if seconds is not None:
            signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
        yield
    finally:
        _client_running = False
        if seconds is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
