"""Helpers the test modules share: running a command as a user would, a small federation in this process, and the
comparison of two runs' rounds without their wall-clock times. Tests import them as ``from support import …``
(pytest puts ``tests/`` on ``sys.path``); no test imports another test module or a script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp

#: The ``perfedavg`` command as a user runs it, with this interpreter.
PERFEDAVG = [sys.executable, "-m", "perfedavg"]

#: A federation of four regression clients with the small ANN: seconds per run, every code path of a round.
ANN_SMALL = [
    "model=ann",
    "dataset=regression",
    "num_clients=4",
    "num_rounds=3",
    "fraction=0.5",
    "local_steps=3",
    "batch_size=8",
]


def run_command(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``args`` in a new process from ``cwd``, output captured as text, Python's warnings off (they are not the
    command's output) and ``env`` added to this process's environment. A hang fails the test after ``timeout`` s."""
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)


def cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``perfedavg ARGS`` as a user runs it (see :func:`run_command`)."""
    return run_command([*PERFEDAVG, *args], cwd, env, timeout)


def without_times(rows: list[dict], also: tuple[str, ...] = ()) -> list[dict]:
    """A run's rounds without the wall-clock figures (``time/…``) and the ``also`` prefixes: what two runs of the
    same configuration must agree on exactly."""
    prefixes = ("time/", *also)
    return [{k: v for k, v in r.items() if not k.startswith(prefixes)} for r in rows]


def forget_process_caches() -> None:
    """What a new process starts with: no loaded split, no decoded arrays, no partitions, no verified cache entry."""
    from perfedavg.data import array_cache, hub

    hub.forget_loaded()
    array_cache.forget_verified()


def federate(overrides: list[str], tmp_path: Path, app: ClientApp | None = None) -> dict:
    """A whole federation in this process on the in-process grid (``app`` defaults to perfedavg's ClientApp), its
    clients on as many threads as an in-process run of the config would use; returns the run's summary (``rounds``,
    ``final``) as ``metrics.json`` holds it."""
    from perfedavg.engines.client_app import app as client_app
    from perfedavg.engines.inprocess_grid import InProcessGrid
    from perfedavg.federation.record import run_and_record
    from perfedavg.run.runner import compose, prepare
    from perfedavg.task import concurrent_clients

    cfg = prepare(compose(overrides))
    workers = concurrent_clients({**cfg, "backend": "inprocess"})
    grid = InProcessGrid(app or client_app, cfg["num_clients"], workers=workers)
    try:
        return run_and_record(grid, cfg, tmp_path)
    finally:
        grid.close()
