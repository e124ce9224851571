"""Faults of long runs: a client that hangs (``round_timeout_s``), a Ray worker process that dies, and a stop signal
(Ctrl-C, SIGTERM) under both backends. Each test injects the fault through a client mod or a real signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.app import Context, Message
from test_federation import federate

from perfedavg import checkpoint
from perfedavg.client_app import build_client_app
from perfedavg.runner import compose, run

SMALL = ["model=ann", "dataset=regression", "num_clients=4", "fraction=1.0", "local_steps=3", "batch_size=8"]


def _is(message: Message, context: Context, client_id: int, server_round: int) -> bool:
    return (
        message.metadata.message_type == "train"
        and int(context.node_config["partition-id"]) == client_id
        and int(message.content["config"]["round"]) == server_round
    )


def stalling(client_id: int, server_round: int, seconds: float):
    """A mod under which one client's training in one round sleeps ``seconds`` first (a hung client)."""

    def mod(message: Message, context: Context, call_next):
        if _is(message, context, client_id, server_round):
            time.sleep(seconds)
        return call_next(message, context)

    return mod


def dying(client_id: int, server_round: int):
    """A mod under which one client's training in one round ends its process (a crash, the OOM killer)."""

    def mod(message: Message, context: Context, call_next):
        if _is(message, context, client_id, server_round):
            os._exit(1)
        return call_next(message, context)

    return mod


def column(summary: dict, key: str) -> list[float]:
    return [r[key] for r in summary["rounds"] if key in r]


# -- round_timeout_s ---------------------------------------------------------------------------------------------------


def test_a_hung_client_is_cut_off_in_process_and_the_round_goes_on(tmp_path: Path, caplog) -> None:
    app = build_client_app(mods=[stalling(1, 2, seconds=60)])
    started = time.monotonic()
    summary = federate([*SMALL, "num_rounds=3", "round_timeout_s=1"], tmp_path, app)
    assert time.monotonic() - started < 30
    assert column(summary, "clients/failed") == [0, 1, 0]
    assert column(summary, "clients/trained") == [4, 3, 4]
    assert "client 1 failed in training: timeout: no reply within round_timeout_s=1" in caplog.text


@pytest.mark.slow
def test_a_hung_client_under_ray_is_cut_off_and_its_worker_replaced(tmp_path: Path, caplog) -> None:
    """The stuck actor is killed and a new one takes its place: round 3 trains every client, and the run ends long
    before the hung client would have (Flower's engine cannot end while one of its threads waits for an actor)."""
    app = build_client_app(mods=[stalling(1, 2, seconds=120)])
    started = time.monotonic()
    summary = run(compose([*SMALL, "num_rounds=4", "round_timeout_s=5"]), tmp_path, client_app=app)
    assert time.monotonic() - started < 100
    assert column(summary, "clients/failed") == [0, 1, 0, 0]
    assert column(summary, "clients/trained") == [4, 3, 4, 4]
    assert column(summary, "clients/evaluated") == [4, 4, 4, 4]
    assert "client 1 failed in training: timeout" in caplog.text


def test_round_timeout_s_must_be_positive_or_null() -> None:
    from perfedavg.config import ConfigError
    from perfedavg.runner import prepare

    with pytest.raises(ConfigError, match=r"round_timeout_s=0.0: must be a positive number"):
        prepare(compose(["round_timeout_s=0"]))
    assert prepare(compose(["round_timeout_s=null"]))["round_timeout_s"] is None


# -- a Ray worker that dies -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_dead_ray_worker_is_replaced_and_no_healthy_client_is_blamed(tmp_path: Path, caplog) -> None:
    app = build_client_app(mods=[dying(1, 2)])
    summary = run(compose([*SMALL, "num_rounds=4"]), tmp_path, client_app=app)
    assert column(summary, "clients/failed") == [0, 1, 0, 0]
    assert column(summary, "clients/trained") == [4, 3, 4, 4]
    assert column(summary, "clients/evaluated") == [4, 4, 4, 4]
    failures = [line for line in caplog.text.splitlines() if "failed in training" in line]
    assert len(failures) == 1 and "client 1 failed" in failures[0] and "worker process died" in failures[0]


def test_an_evaluation_below_min_clients_stops_the_run(tmp_path: Path) -> None:
    from perfedavg.federation import FederationError

    def failing_evaluation(message: Message, context: Context, call_next):
        if message.metadata.message_type == "evaluate" and int(context.node_config["partition-id"]) in (0, 1):
            raise RuntimeError("injected evaluation failure")
        return call_next(message, context)

    app = build_client_app(mods=[failing_evaluation])
    with pytest.raises(FederationError, match=r"round 1: 2 of 4 clients failed in evaluation, 2 evaluated"):
        federate([*SMALL, "num_rounds=2", "min_clients=3"], tmp_path, app)
    summary = federate([*SMALL, "num_rounds=2", "min_clients=2"], tmp_path / "ok", app)
    assert column(summary, "clients/evaluated") == [2, 2]


# -- stop signals ------------------------------------------------------------------------------------------------------


def processes_left(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group."""
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(pgid) and not line.split()[1].startswith("Z")]


def signal_mid_run(args: list[str], run_dir: Path, signum: int, after_round: int = 2) -> tuple[int, str, float]:
    """Start ``perfedavg`` in a process group of its own, send ``signum`` to the group (as a terminal's Ctrl-C or a
    batch scheduler does) once round ``after_round`` is checkpointed; (exit code, output, seconds to exit)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfedavg", *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        state = checkpoint.load(run_dir) if checkpoint.checkpoint_path(run_dir).exists() else None
        if state is not None and state["round"] >= after_round:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    started = time.monotonic()
    os.killpg(proc.pid, signum)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{signal.Signals(signum).name}: still running 60 s later") from None
    elapsed = time.monotonic() - started
    time.sleep(1)  # Ray's processes end with the driver
    assert not processes_left(proc.pid), processes_left(proc.pid)
    return proc.returncode, output, elapsed


def assert_stopped_cleanly(code: int, output: str, run_dir: Path, signum: int) -> int:
    """Exit 128 + signal, no traceback, the resume line naming the last checkpointed round; returns that round."""
    assert code == 128 + signum, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    done = checkpoint.load(run_dir)["round"]
    assert f"interrupted after round {done}; continue with: perfedavg resume={run_dir.resolve()}" in output
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / ".perfedavg.lock").exists()
    return done


def test_ctrl_c_in_process_stops_at_once_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    args = [*SMALL, "backend=inprocess", "num_rounds=400", "local_steps=20"]
    code, output, elapsed = signal_mid_run(args, tmp_path / "stopped", signal.SIGINT)
    done = assert_stopped_cleanly(code, output, tmp_path / "stopped", signal.SIGINT)
    assert elapsed < 20 and done < 400

    # Continue to round done + 3 with the printed command, and compare with a run of that length in one go.
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    perfedavg = [sys.executable, "-m", "perfedavg"]
    resumed = subprocess.run(
        [*perfedavg, f"resume={tmp_path / 'stopped'}", f"num_rounds={done + 3}"], cwd=tmp_path, env=env, text=True
    )
    whole = subprocess.run(
        [*perfedavg, *args, f"num_rounds={done + 3}", f"hydra.run.dir={tmp_path / 'whole'}"], cwd=tmp_path, env=env
    )
    assert resumed.returncode == whole.returncode == 0
    rows = [json.loads((tmp_path / d / "metrics.json").read_text())["rounds"] for d in ("stopped", "whole")]
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]  # noqa: E731
    assert strip(rows[0]) == strip(rows[1])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_under_ray_stops_within_seconds_and_leaves_no_process(tmp_path: Path, signum: int) -> None:
    """The whole process group gets the signal (Ray's processes too, as from a terminal or a batch scheduler); the
    clients are busy (20 local steps of the default Net, 2 actors) when it comes."""
    code, output, elapsed = signal_mid_run(["num_rounds=400", "local_steps=20"], tmp_path / "run", signum)
    assert_stopped_cleanly(code, output, tmp_path / "run", signum)
    assert elapsed < 30
