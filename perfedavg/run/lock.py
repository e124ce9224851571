"""One run per run directory: a lock file holding the owner's PID and host while a run uses the directory.

Two runs writing into one directory (the same ``hydra.run.dir``, or ``resume=`` of a run still going) would overwrite
each other's checkpoint, ``metrics.json`` and TensorBoard log without a word. :func:`hold` takes the directory for the
duration of a run: it creates ``<run dir>/.perfedavg.lock`` exclusively (``O_CREAT | O_EXCL``, atomic on local file
systems) with ``{"pid", "host", "since"}`` and removes it when the run ends, however it ends short of ``kill -9``.
A lock left by a process that no longer exists on this host is stale and is taken over with a warning: its PID is
gone, the machine has rebooted since (Linux boot id), or the PID now belongs to a process started at another time
(PIDs are reused). A lock of a live process, or of another host (whose processes cannot be checked from here), is
refused with :class:`RunDirectoryInUse` naming the owner.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from perfedavg.errors import UserError

LOCK_FILE = ".perfedavg.lock"

log = logging.getLogger("perfedavg")


class RunDirectoryInUse(UserError, RuntimeError):
    """Another live run holds the directory."""


def lock_path(run_dir: Path) -> Path:
    return Path(run_dir) / LOCK_FILE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _boot_id() -> str | None:
    """This boot's id (Linux), or ``None`` where the system does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc/<pid>/stat``), or ``None``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the command name may contain spaces
    except (OSError, IndexError, ValueError):
        return None


def _identity() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
        "boot_id": _boot_id(),
        "start": _start_time(os.getpid()),
    }


def _stale(info: dict) -> bool:
    """Whether the process a lock names on this host is certainly gone (see the module docstring)."""
    pid = int(info["pid"])
    if not _alive(pid):
        return True
    if info.get("boot_id") and _boot_id() and info["boot_id"] != _boot_id():
        return True  # recorded before a reboot: that process cannot be running
    started = info.get("start")
    return started is not None and _start_time(pid) not in (None, started)  # the PID was reused


def owner(run_dir: Path) -> dict | None:
    """The live owner of ``run_dir``'s lock (``{"pid", "host", "since"}``), or ``None`` if it is free or stale."""
    path = lock_path(run_dir)
    try:
        info = json.loads(path.read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):  # half-written or foreign: treat as stale
        return None
    if host == socket.gethostname() and _stale({**info, "pid": pid}):
        return None
    return info


def _describe(run_dir: Path, info: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return (
        f"run directory {run_dir} is in use by another run (PID {info['pid']} on host {info['host']}, since {since}); "
        f"wait for it to end, or choose another directory (hydra.run.dir=…). If that process is gone, remove "
        f"{lock_path(run_dir)}"
    )


def _held_here(path: Path) -> bool:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(info, dict)
        and info.get("pid") == os.getpid()
        and info.get("host") == socket.gethostname()
        and info.get("start") == _start_time(os.getpid())
    )


@contextlib.contextmanager
def hold(run_dir: Path, within: bool = False) -> Iterator[None]:
    """Hold ``run_dir`` for the duration of the ``with`` block (see the module docstring). ``within``: a lock this
    process already holds is accepted and left to its holder (the run inside the CLI's hold, taken before Hydra
    wrote anything); otherwise it is refused like any live owner's."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = lock_path(run_dir)
    if within and _held_here(path):  # taken earlier by this process (the CLI, before Hydra writes): a no-op
        yield
        return
    mine = _identity()
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = owner(run_dir)
            if info is not None:
                raise RunDirectoryInUse(_describe(run_dir, info)) from None
            log.warning("%s: taking over a stale lock (its process no longer exists)", path)
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        break
    else:
        raise RunDirectoryInUse(f"run directory {run_dir}: could not take its lock {path}")
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if json.loads(path.read_text()).get("pid") == mine["pid"]:
                path.unlink()
