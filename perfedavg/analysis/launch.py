"""What the analysis commands share: the ``perfedavg`` command they launch, the experiments and methods they accept,
and running several federations at once.

Every federation runs in its own ``python -m perfedavg`` process of the same interpreter (so an installed wheel
tunes and reproduces with itself, outside any checkout); the commands here only compose, launch and read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from perfedavg import algorithms
from perfedavg.errors import UserError

#: One federation (or one Hydra multirun) of this installation.
PERFEDAVG = (sys.executable, "-m", "perfedavg")


class AnalysisError(UserError):
    """A refused analysis command: the message names the option, the value and what is allowed."""


def experiments() -> list[str]:
    """The experiments the config tree offers (``conf/experiment/<name>.yaml``, or ``$PERFEDAVG_CONF_DIR``'s)."""
    from perfedavg.config import preparation

    return sorted(p.stem for p in (preparation.CONF_DIR / "experiment").glob("*.yaml"))


def check_experiment(name: str) -> None:
    """Raise :class:`AnalysisError` naming the experiments there are when ``name`` is not one of them."""
    known = experiments()
    if name not in known:
        raise AnalysisError(f"EXPERIMENT={name!r} is not an experiment; allowed: {' '.join(known)}")


def split_methods(given: Sequence[str], option: str = "--methods") -> list[str]:
    """Methods given space- or comma-separated (``fo,hvp`` or ``fo hvp``), each checked against the declarations;
    :class:`AnalysisError` naming the allowed ones otherwise."""
    methods = [m for item in given for m in item.replace(",", " ").split()]
    allowed = algorithms.methods()
    if not methods:
        raise AnalysisError(f"{option} is empty; allowed: {' '.join(allowed)}")
    for method in methods:
        if method not in allowed:
            raise AnalysisError(f"{option}: unknown method {method!r}; allowed: {' '.join(allowed)}")
    return list(dict.fromkeys(methods))


def say(tool: str, message: str) -> None:
    """A progress line on stderr: ``[tool] message``."""
    print(f"[{tool}] {message}", file=sys.stderr, flush=True)


def perfedavg(args: Sequence[str], log: Path | None = None, env: dict[str, str] | None = None) -> int:
    """Run ``perfedavg ARGS`` to its end, with ``env`` added to the environment; its output goes to ``log``
    (appended) or to this process's own streams. Returns its exit status."""
    environment = {**os.environ, **env} if env else None
    if log is None:
        return subprocess.run([*PERFEDAVG, *args], env=environment).returncode
    with open(log, "a") as out:
        return subprocess.run([*PERFEDAVG, *args], stdout=out, stderr=subprocess.STDOUT, env=environment).returncode


@dataclass
class Job:
    """One federation of a batch: its label (for progress lines), its overrides and its log file; ``group`` names
    the jobs that stand or fall together (a tuning candidate's seeds), for :func:`run_parallel`'s ``drop_group``."""

    label: str
    args: list[str]
    log: Path
    group: str = ""


def run_parallel(
    tool: str,
    jobs: Sequence[Job],
    at_once: int,
    drop_group: bool = False,
    judge: Callable[[Job], str | None] | None = None,
) -> list[Job]:
    """Run ``jobs`` (``perfedavg`` processes), ``at_once`` at a time; returns those that failed (a non-zero exit).
    ``judge`` says why a job that finished cannot count (e.g. ``collapsed at round 452``), or None. With
    ``drop_group`` the pending group-mates of a job that failed or was judged are not started (said on a progress
    line): their group can no longer pass, and their runs would only cost time. Ctrl-C stops the running ones (each
    saves its checkpoint on SIGINT) before it is raised again."""
    pending = list(jobs)
    running: dict[subprocess.Popen, Job] = {}
    failed: list[Job] = []
    try:
        while pending or running:
            while pending and len(running) < max(1, at_once):
                job = pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                out = open(job.log, "a")  # noqa: SIM115 - closed when the process ends
                running[subprocess.Popen([*PERFEDAVG, *job.args], stdout=out, stderr=subprocess.STDOUT)] = job
                out.close()  # the child holds its own descriptor
            for process in [p for p in running if p.poll() is not None]:
                job = running.pop(process)
                if process.returncode == 0:
                    problem = judge(job) if judge else None
                    say(tool, f"{job.label} finished" + (f", but {problem}" if problem else ""))
                else:
                    failed.append(job)
                    problem = "stopped"
                    say(tool, f"{job.label} stopped (exit {process.returncode}; see {job.log})")
                if problem and drop_group and job.group:
                    for mate in [j for j in pending if j.group == job.group]:
                        pending.remove(mate)
                        say(tool, f"{mate.label} not run: {job.label} {problem}, so its group cannot pass")
            time.sleep(0.2)
    except KeyboardInterrupt:
        for process in running:
            process.send_signal(signal.SIGINT)
        for process in running:
            process.wait(timeout=60)
        raise
    return failed


def default_jobs() -> int:
    """Parallel federations by default: the CPUs this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
