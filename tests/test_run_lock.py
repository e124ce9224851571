"""One run per run directory: a second run, or a resume of a live run, is refused; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from support import cli

from perfedavg.config import ConfigError
from perfedavg.run import lock as run_lock
from perfedavg.run.runner import compose, run

SMALL = ["model=ann", "dataset=regression", "backend=inprocess", "num_clients=4", "num_rounds=2", "local_steps=2"]


def live_lock(run_dir: Path, pid: int | None = None, host: str | None = None) -> None:
    """A lock as a live run would leave it (by default this test process: certainly alive)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    info = {"pid": pid or os.getpid(), "host": host or socket.gethostname(), "since": 0}
    run_lock.lock_path(run_dir).write_text(json.dumps(info))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait(timeout=60)
    return proc.pid


def test_a_second_run_into_a_live_runs_directory_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- the first run's overrides\n")
    live_lock(run_dir, pid=os.getppid())  # the pytest runner's parent: alive, and not the CLI process itself
    out = cli([*SMALL, f"hydra.run.dir={run_dir}"], tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"run directory {run_dir} is in use by another run (PID {os.getppid()} on host" in out.stderr
    assert "Traceback" not in out.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").read_text() == "- the first run's overrides\n"  # untouched
    assert not list(run_dir.glob("events.out.tfevents*"))


@pytest.mark.slow
def test_resume_of_a_live_run_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert cli([*SMALL, f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    assert not run_lock.lock_path(run_dir).exists()  # released when the run ended
    live_lock(run_dir, pid=os.getppid())
    out = cli([f"resume={run_dir}", "num_rounds=3"], tmp_path)
    assert out.returncode == 2 and "is in use by another run" in out.stderr, out.stderr[-2000:]
    run_lock.lock_path(run_dir).unlink()
    assert cli([f"resume={run_dir}", "num_rounds=3"], tmp_path).returncode == 0  # once it is free, it resumes


def test_a_stale_lock_is_taken_over_with_a_warning_and_released(tmp_path: Path, caplog) -> None:
    live_lock(tmp_path, pid=dead_pid())
    summary = run(compose(SMALL), tmp_path)
    assert len(summary["rounds"]) == 2
    assert "taking over a stale lock" in caplog.text
    assert not run_lock.lock_path(tmp_path).exists()


def test_the_lock_is_released_when_the_run_fails_and_held_while_it_runs(tmp_path: Path, monkeypatch) -> None:
    from perfedavg.run import runner

    seen = []

    def failing(resolved, run_dir, client_app):
        seen.append(json.loads(run_lock.lock_path(run_dir).read_text()))
        with pytest.raises(run_lock.RunDirectoryInUse):  # while it runs, nobody else gets the directory
            with run_lock.hold(run_dir):
                pass
        raise RuntimeError("the federation broke")

    monkeypatch.setattr(runner, "_simulate", failing)
    with pytest.raises(RuntimeError, match="the federation broke"):
        run(compose(SMALL), tmp_path)
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not run_lock.lock_path(tmp_path).exists()


def test_a_lock_of_another_host_is_refused_and_names_it(tmp_path: Path) -> None:
    live_lock(tmp_path, pid=dead_pid(), host="elsewhere.example")
    with pytest.raises(ConfigError, match="PID .* on host elsewhere.example"):
        run(compose(SMALL), tmp_path)
    assert run_lock.lock_path(tmp_path).exists()  # not ours to remove


def test_a_lock_from_before_a_reboot_or_of_a_reused_pid_is_stale(tmp_path: Path) -> None:
    """The PID in a lock may belong to another process by now: after a reboot (another boot id), or reused (another
    start time). Either way the lock is stale; the same PID with its own boot id and start time is live."""
    me = run_lock._identity()  # noqa: SLF001 - this live process, as a lock records it
    for other, stale in (({}, False), ({"boot_id": "another-boot"}, True), ({"start": -1}, True)):
        run_lock.lock_path(tmp_path).write_text(json.dumps({**me, "pid": os.getppid(), **other}))
        if not other:  # the parent's own start time
            info = {**me, "pid": os.getppid(), "start": run_lock._start_time(os.getppid())}  # noqa: SLF001
            run_lock.lock_path(tmp_path).write_text(json.dumps(info))
        assert (run_lock.owner(tmp_path) is None) == stale, other
