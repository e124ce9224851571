"""Faults of long runs: a client that hangs (``round_timeout_s``), a Ray worker process that dies, and a stop signal
(Ctrl-C, SIGTERM) under both backends, also while a client hangs. Each test injects the fault through a client mod
(``perfedavg.testing.faults``) or a real signal to the run's process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.app import Context, Message
from support import cli, federate, without_times

from perfedavg.engines.client_app import build_client_app
from perfedavg.run.runner import compose, run
from perfedavg.testing.faults import Fault, Stopped, faulty_client_app, signal_mid_run

SMALL = ["model=ann", "dataset=regression", "num_clients=4", "fraction=1.0", "local_steps=3", "batch_size=8"]


def column(summary: dict, key: str) -> list[float]:
    return [r[key] for r in summary["rounds"] if key in r]


# -- round_timeout_s ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2], ids=["main-thread", "pool"])
def test_a_hung_client_is_cut_off_in_process_and_the_round_goes_on(tmp_path: Path, caplog, workers: int) -> None:
    app = faulty_client_app(Fault("stall", client=1, server_round=2, seconds=60))
    started = time.monotonic()
    summary = federate([*SMALL, "num_rounds=3", "round_timeout_s=1", f"inprocess_workers={workers}"], tmp_path, app)
    assert time.monotonic() - started < 30
    assert column(summary, "clients/failed") == [0, 1, 0]
    assert column(summary, "clients/trained") == [4, 3, 4]
    assert "client 1 failed in training: timeout: no reply within round_timeout_s=1" in caplog.text


@pytest.mark.slow
def test_a_hung_client_under_ray_is_cut_off_and_its_worker_replaced(tmp_path: Path, caplog) -> None:
    """The stuck actor is killed and a new one takes its place: round 3 trains every client, and the run ends long
    before the hung client would have (Flower's engine cannot end while one of its threads waits for an actor)."""
    app = faulty_client_app(Fault("stall", client=1, server_round=2, seconds=120))
    started = time.monotonic()
    summary = run(compose([*SMALL, "num_rounds=4", "round_timeout_s=5"]), tmp_path, client_app=app)
    assert time.monotonic() - started < 100
    assert column(summary, "clients/failed") == [0, 1, 0, 0]
    assert column(summary, "clients/trained") == [4, 3, 4, 4]
    assert column(summary, "clients/evaluated") == [4, 4, 4, 4]
    assert "client 1 failed in training: timeout" in caplog.text


def test_round_timeout_s_must_be_positive_or_null() -> None:
    from perfedavg.config import ConfigError
    from perfedavg.run.runner import prepare

    with pytest.raises(ConfigError, match=r"round_timeout_s=0.0: must be a positive number"):
        prepare(compose(["round_timeout_s=0"]))
    assert prepare(compose(["round_timeout_s=null"]))["round_timeout_s"] is None


# -- a Ray worker that dies -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_dead_ray_worker_is_replaced_and_no_healthy_client_is_blamed(tmp_path: Path, caplog) -> None:
    app = faulty_client_app(Fault("die", client=1, server_round=2))
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


def assert_stopped_cleanly(stopped: Stopped, signum: int) -> int:
    """Exit 128 + signal, no traceback, no process left, the resume line naming the last checkpointed round, which
    loads (:meth:`faults.Stopped.problems`); returns that round."""
    assert not stopped.problems(signum)
    return stopped.checkpointed


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["main-thread", "pool"])
def test_ctrl_c_in_process_stops_at_once_and_the_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, workers: int
) -> None:
    args = [*SMALL, "backend=inprocess", "num_rounds=400", "local_steps=20", f"inprocess_workers={workers}"]
    stopped = signal_mid_run(args, tmp_path / "stopped", signal.SIGINT)
    done = assert_stopped_cleanly(stopped, signal.SIGINT)
    assert stopped.seconds < 20 and done < 400

    # Continue to round done + 3 with the printed command, and compare with a run of that length in one go.
    resumed = cli([f"resume={tmp_path / 'stopped'}", f"num_rounds={done + 3}"], tmp_path)
    whole = cli([*args, f"num_rounds={done + 3}", f"hydra.run.dir={tmp_path / 'whole'}"], tmp_path)
    assert resumed.returncode == whole.returncode == 0, resumed.stderr[-2000:] + whole.stderr[-2000:]
    rows = [json.loads((tmp_path / d / "metrics.json").read_text())["rounds"] for d in ("stopped", "whole")]
    assert without_times(rows[0]) == without_times(rows[1])


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM], ids=["SIGTERM"])
def test_a_stop_signal_under_ray_stops_within_seconds_and_leaves_no_process(tmp_path: Path, signum: int) -> None:
    """The whole process group gets the signal (Ray's processes too, as from a terminal or a batch scheduler); the
    clients are busy (20 local steps of the default Net, 2 actors) when it comes. SIGTERM, whose handler ``ray.init``
    replaces (stopping.take_signals_back); Ctrl-C under Ray: test_ctrl_c_while_a_client_hangs_stops_within_seconds."""
    stopped = signal_mid_run(["num_rounds=400", "local_steps=20"], tmp_path / "run", signum)
    assert_stopped_cleanly(stopped, signum)
    assert stopped.seconds < 30
    # the default run on Ray: Flower, Ray and Hydra's plugins stay quiet (no deprecation notices, no plugin scan)
    assert "DEPRECATED" not in stopped.output and "alembic" not in stopped.output, stopped.output[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["backend=inprocess inprocess_workers=1", "backend=inprocess inprocess_workers=2", "backend=ray"]
)
def test_ctrl_c_while_a_client_hangs_stops_within_seconds(tmp_path: Path, backend: str) -> None:
    """Client 1 sleeps 600 s in round 2 (a hung client; round_timeout_s left at its default of 600 s): Ctrl-C cuts it
    off at once (in the main thread: an exception raised inside it; on the in-process pool: its thread, asleep in C,
    is abandoned; under Ray: its worker is killed) instead of waiting."""
    stopped = signal_mid_run(
        ["num_clients=6", "fraction=1.0", "num_rounds=5", *backend.split()],
        tmp_path / "run",
        signal.SIGINT,
        after_round=1,
        faults=["stall:1:2:600"],
        delay_s=2.0,  # round 2 is under way: client 1 is asleep, the others are done
    )
    assert assert_stopped_cleanly(stopped, signal.SIGINT) == 1
    assert stopped.seconds < 20


def test_a_second_stop_signal_exits_at_once(monkeypatch) -> None:
    """The first signal asks the run to stop (STOP set, nothing raised outside a client); the second exits the
    process straight away with 128 + its number, for a stop that itself hangs."""
    from perfedavg.federation import stopping

    exits: list[int] = []
    monkeypatch.setattr(stopping.os, "_exit", exits.append)
    before = signal.getsignal(signal.SIGINT)
    with stopping.stop_on_signals():
        stopping._on_stop_signal(signal.SIGTERM, None)
        assert stopping.STOP.is_set() and exits == []
        assert stopping.stop_signal() == signal.SIGTERM
        stopping._on_stop_signal(signal.SIGINT, None)
        assert exits == [128 + signal.SIGINT]
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back, and the stop request is over
    assert not stopping.STOP.is_set()


def test_a_round_whose_clients_die_of_the_stop_signal_is_an_interruption_not_a_failure(tmp_path: Path) -> None:
    """A stop signal sent to the whole process group ends Ray's workers too, and their failures can reach the round
    loop (in its own thread under Ray) before the main thread's handler has set STOP: seen as exit 1 instead of 143
    on a loaded machine. Reproduced in that order without a race: the loop runs in a thread, every client of
    round 2 fails, and the stop request comes 0.2 s later; the run is interrupted after round 1, not failed."""
    import threading

    from perfedavg.federation import stopping

    trained: list[int] = []

    def stop_request() -> None:
        stopping._received.append(signal.SIGTERM)
        stopping.STOP.set()

    def dying_of_the_signal(message: Message, context: Context, call_next):  # noqa: ANN202 - a Flower mod
        if message.metadata.message_type == "train":
            trained.append(1)
            if len(trained) == 5:  # round 2 (4 clients, all sampled): the workers die, the handler runs later
                threading.Timer(0.2, stop_request).start()
            if len(trained) > 4:
                raise RuntimeError("the worker died (SIGTERM)")
        return call_next(message, context)

    app = build_client_app(mods=[dying_of_the_signal])
    ended: list[BaseException] = []

    def loop() -> None:
        try:
            federate([*SMALL, "num_rounds=3"], tmp_path, app)
        except BaseException as e:  # noqa: BLE001 - what the run ended with is the test's subject
            ended.append(e)

    runner = threading.Thread(target=loop)
    try:
        runner.start()
        runner.join(timeout=120)
    finally:
        stopping.STOP.clear()
        stopping._received.clear()
    assert len(ended) == 1 and isinstance(ended[0], stopping.FederationInterrupted), ended
    assert (ended[0].completed, ended[0].exit_code) == (1, 128 + signal.SIGTERM)


def test_outside_the_main_thread_a_failed_round_waits_briefly_for_the_stop_signal(monkeypatch) -> None:
    """The round loop's thread under Ray: a signal that comes within the grace period makes the failure an
    interruption; none in that time leaves it a failure."""
    import threading

    from perfedavg.federation import stopping

    monkeypatch.setattr(stopping, "SIGNAL_GRACE_S", 5.0)
    answers: list[bool] = []
    waiting = threading.Thread(target=lambda: answers.append(stopping.stopping_caused_it()))
    waiting.start()
    stopping.STOP.set()  # the main thread's handler, later than the workers' deaths
    waiting.join(timeout=10)
    stopping.STOP.clear()
    monkeypatch.setattr(stopping, "SIGNAL_GRACE_S", 0.05)
    alone = threading.Thread(target=lambda: answers.append(stopping.stopping_caused_it()))
    alone.start()
    alone.join(timeout=10)
    assert answers == [True, False]


def test_ctrl_c_before_the_federation_starts_is_one_line_and_exit_130(monkeypatch, capsys) -> None:
    """Composing or loading data (before the run's own signal handling) ends on Ctrl-C without a traceback."""
    from perfedavg.cli import main as cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "check_composes", interrupted)
    monkeypatch.setattr(sys, "argv", ["perfedavg", "experiment=smoke"])
    with pytest.raises(SystemExit) as stopped:
        cli.main()
    assert stopped.value.code == 130
    assert capsys.readouterr().err == "perfedavg: interrupted before the federation started; nothing to continue\n"


DRIVER = """
import os, signal, subprocess, sys, time
from perfedavg.federation import stopping

child = subprocess.Popen(["sleep", "300"], stdout=subprocess.DEVNULL)  # a descendant, as Ray's raylet is of the run
orphan = subprocess.run(  # a process of the group whose parent is gone, as Ray's agents once the raylet has ended
    ["bash", "-c", "(exec -a ray::FakeAgent sleep 300 >/dev/null 2>&1 </dev/null) & echo $!"],
    capture_output=True,
    text=True,
    timeout=30,
).stdout.strip()
print(child.pid, orphan, flush=True)
with stopping.stop_on_signals():
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGINT)  # the second: exit at once
    time.sleep(60)
"""


def test_a_second_stop_signal_leaves_no_process_of_the_run_behind(tmp_path: Path) -> None:
    """The immediate exit of a second Ctrl-C first kills what would outlive the run: its descendants (Ray's node
    processes) and the Ray processes of its process group already orphaned (Ray's agents, seen left running after a
    double Ctrl-C of a Ray run). Driven here without Ray: a child, and an orphan named like Ray's agent."""
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp_path
    )
    try:
        out, _ = driver.communicate(timeout=60)
        assert driver.returncode == 128 + signal.SIGINT, out
        pids = [int(p) for p in out.split()]
        deadline = time.monotonic() + 10  # SIGKILL is sent before the exit; the kernel may take a moment to reap
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], pids
        # what counts as Ray's: its titles and its package's programs, not a wrapper whose path says "ray"
        from perfedavg.federation import stopping

        assert stopping._is_ray("ray::DashboardAgent") and stopping._is_ray(
            "/x/.venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_ip_address=127.0.0.1"
        )
        assert not stopping._is_ray("bash /home/raymond/perfedavg/scripts/run.sh")
    finally:  # whatever the outcome, nothing of the test's process group stays
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_a_stopped_run_kills_what_of_it_outlives_the_grace_and_nothing_that_ended(tmp_path: Path) -> None:
    """:func:`stopping.end_leftovers` in a process of its own (it looks at that process's children): a Ray child
    (a program of a ``ray`` package) that ignores SIGTERM, as a busy, niced Ray worker may for seconds, is killed
    after the grace; a Ray child that ends within it, or has ended and is a zombie, is not counted; a child that is
    not Ray's is never touched."""
    ray = tmp_path / "site-packages" / "ray"
    ray.mkdir(parents=True)
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(60)"
    )
    (ray / "worker.py").write_text(stubborn)
    (ray / "quick.py").write_text("import time; time.sleep(float(__import__('sys').argv[1]))")
    (tmp_path / "other.py").write_text(stubborn)
    script = f"""
import json, subprocess, sys, time
from perfedavg.federation import stopping
quick = subprocess.Popen([sys.executable, {str(ray / "quick.py")!r}, "0.3"])
done = subprocess.Popen([sys.executable, {str(ray / "quick.py")!r}, "0"]); time.sleep(1.0)  # a zombie: never waited for
assert stopping.end_leftovers(grace_s=5.0) == [] and quick.poll() == 0
worker, other = (subprocess.Popen([sys.executable, path], stdout=subprocess.PIPE)
                 for path in ({str(ray / "worker.py")!r}, {str(tmp_path / "other.py")!r}))
worker.stdout.readline(), other.stdout.readline()
started = time.monotonic()
killed = stopping.end_leftovers(grace_s=0.5)
took = time.monotonic() - started
alive = other.poll() is None
other.kill()
print(json.dumps({{"killed": killed, "worker": worker.pid, "code": worker.wait(5), "s": took, "other": alive}}))
"""
    # a session of its own: Ray processes of other tests in this worker's process group are not its leftovers
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path, start_new_session=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["killed"] == [result["worker"]] and result["code"] == -signal.SIGKILL
    assert result["other"], "a process that is not Ray's was killed"
    assert 0.5 <= result["s"] < 5
    assert "1 process(es) of this run still running 0.5 s after the stop: killed" in out.stderr
