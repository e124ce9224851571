"""Issue 37: an in-process round's clients run on a pool of threads, with results bit-identical to one client after
another at any worker count, and the same cut-offs (a hung client, a stop request) as in the main thread."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from support import without_times

from perfedavg.config import ConfigError
from perfedavg.engines.client_pool import ClientPool
from perfedavg.federation.stopping import ClientCutOff
from perfedavg.run.runner import compose, prepare, run

#: Six digit clients, all sampled: every worker count up to six runs clients side by side.
DIGITS = [
    "backend=inprocess",
    "model=mlp",
    "num_clients=6",
    "fraction=1.0",
    "num_rounds=2",
    "local_steps=2",
    "batch_size=8",
    "beta=0.1",
]

#: Every algorithm and every Hessian mode but ``diag``, which computes one client at a time in-process (BackPACK's
#: torch.fx tracing: :func:`perfedavg.task.traces_with_fx`); the stability monitor and the diagnostics on.
CASES = {
    "perfedavg-hvp": ["hessian=hvp", "stability.every=1", "diagnostics.every=1"],
    "perfedavg-fd": ["hessian=fd"],
    "perfedavg-exact": ["hessian=exact", "model.hidden=[8]"],
    "perfedavg-fo-weighted": ["hessian=fo", "aggregation=weighted", "fraction=0.5"],
    "fedavg": ["algorithm=fedavg"],
    "fedavg_ft": ["algorithm=fedavg_ft"],
    "ditto": ["algorithm=ditto", "fraction=0.5", "num_rounds=3"],
    "pfedme": ["algorithm=pfedme"],
    "local": ["algorithm=local"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_results_are_bit_identical_at_any_worker_count(case: str, tmp_path: Path) -> None:
    rounds = {}
    for workers in (1, 2, 3):
        summary = run(compose([*DIGITS, *CASES[case], f"inprocess_workers={workers}"]), tmp_path / str(workers))
        rounds[workers] = without_times(summary["rounds"], also=("stability/seconds",))
    assert len(rounds[1]) >= 2
    assert rounds[2] == rounds[1]
    assert rounds[3] == rounds[1]


def test_the_default_is_every_core_at_client_cpus_each_capped_by_a_rounds_clients(monkeypatch) -> None:
    from perfedavg import task

    monkeypatch.setattr(task, "available_cpus", lambda: 8)
    base = {
        "batch_size": 40,
        "model": {"name": "mlp", "input_shape": [1, 28, 28], "num_outputs": 10, "hidden": [80, 60]},
        "backend": "inprocess",
        "num_clients": 50,
        "fraction": 0.1,
        "eval_fraction": 1.0,
        "client_cpus": 1.0,
        "hessian": {"mode": "hvp"},
        "algorithm": {"name": "perfedavg"},
    }
    assert task.inprocess_workers(base) == 8
    assert task.inprocess_workers({**base, "client_cpus": 2.0}) == 4
    assert task.inprocess_workers({**base, "eval_fraction": 0.1}) == 5  # 5 clients per round at most
    assert task.inprocess_workers({**base, "inprocess_workers": 3}) == 3
    assert task.concurrent_clients({**base, "inprocess_workers": 3}) == 3  # an exact Hessian's budget is shared
    monkeypatch.setattr(task, "available_cpus", lambda: 1)
    assert task.inprocess_workers(base) == 1
    monkeypatch.setattr(task, "available_cpus", lambda: 8)
    diag = {**base, "hessian": {"mode": "diag"}, "algorithm": {"name": "perfedavg"}}
    assert task.inprocess_workers(diag) == 1  # BackPACK traces with torch.fx: one client at a time
    assert task.inprocess_workers({**diag, "algorithm": {"name": "fedavg"}}) == 8  # FedAvg never uses it
    assert task.minibatch_work(base) == 40 * 68_270  # the paper's MNIST MLP: the pool pays
    small = {**base, "batch_size": 10, "model": {**base["model"], "input_shape": [1, 8, 8]}}
    assert task.minibatch_work(small) < task.POOL_MIN_WORK
    assert task.inprocess_workers(small) == 1  # the digits MLP: threads would only contend for the interpreter
    assert task.inprocess_workers({**small, "inprocess_workers": 2}) == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("inprocess_workers=0", "inprocess_workers=0: must be a positive integer"),
        ("inprocess_workers=-2", "inprocess_workers=-2: must be a positive integer"),
        ("inprocess_workers=2 hessian=diag", "inprocess_workers=2: hessian=diag computes clients one at a time"),
    ],
)
def test_a_worker_count_below_one_or_several_with_backpack_is_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(compose(["backend=inprocess", *override.split()]))


# --- the pool itself ----------------------------------------------------------------------------------------------


def test_replies_come_in_job_order_whatever_order_the_clients_finish_in() -> None:
    pool = ClientPool(lambda s: (time.sleep(s), s)[1], workers=3)
    try:
        assert pool.run([0.2, 0.0, 0.1, 0.05]) == [0.2, 0.0, 0.1, 0.05]
        assert pool.run([0.0] * 7) == [0.0] * 7  # the threads serve round after round
    finally:
        pool.close()


def spin(seconds: float) -> str:
    """A client busy in Python for ``seconds`` (cut off between bytecodes), then done."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return f"spun {seconds}"


def test_a_client_past_its_time_is_cut_off_and_the_others_reply() -> None:
    pool = ClientPool(spin, workers=2)
    try:
        start = time.monotonic()
        replies = pool.run([0.0, 30.0, 0.1], timeout=0.5)
        took = time.monotonic() - start
        assert replies == ["spun 0.0", None, "spun 0.1"]
        assert took < 5, took
        assert pool.run([0.05, 0.05]) == ["spun 0.05", "spun 0.05"]  # a fresh thread took the cut-off one's place
    finally:
        pool.close()


def test_a_client_stuck_in_one_c_call_is_abandoned_and_the_round_goes_on() -> None:
    release = threading.Event()

    def handle(job: str) -> str:
        if job == "stuck":
            release.wait()  # one C-level wait: no bytecode boundary until it returns
        return job

    pool = ClientPool(handle, workers=2)
    try:
        start = time.monotonic()
        assert pool.run(["stuck", "a", "b"], timeout=0.3) == [None, "a", "b"]
        assert time.monotonic() - start < 5
        assert pool.cut_offs == 1
        assert pool.run(["c", "d"]) == ["c", "d"]  # two threads serve although one is still stuck
    finally:
        release.set()
        pool.close()


def test_a_stop_request_cuts_off_the_running_clients_and_starts_no_more() -> None:
    stop = threading.Event()
    started: list[float] = []

    def handle(seconds: float) -> str:
        started.append(seconds)
        return spin(seconds)

    pool = ClientPool(handle, workers=2)
    try:
        threading.Timer(0.3, stop.set).start()
        start = time.monotonic()
        replies = pool.run([0.0, 60.0, 60.0, 1.0, 1.0], stop=stop)
        assert time.monotonic() - start < 5
        assert replies == ["spun 0.0", None, None, None, None]
        assert sorted(started) == [0.0, 60.0, 60.0]  # the last two never started
    finally:
        pool.close()


def test_a_cut_off_that_comes_as_the_client_finishes_loses_nothing_else() -> None:
    """Many clients that end just at their deadline: each is either replied or cut off, never both, and every later
    round still gets every reply."""
    pool = ClientPool(spin, workers=3)
    try:
        for _ in range(20):
            replies = pool.run([0.02] * 6, timeout=0.02)
            assert all(r in (None, "spun 0.02") for r in replies)
        assert pool.run([0.0] * 6) == ["spun 0.0"] * 6
    finally:
        pool.close()


def test_a_handler_that_raises_a_cut_off_itself_has_no_reply() -> None:
    def handle(job: int) -> int:
        if job == 1:
            raise ClientCutOff("timeout")
        return job

    pool = ClientPool(handle, workers=2)
    try:
        assert pool.run([0, 1, 2]) == [0, None, 2]
    finally:
        pool.close()


@pytest.mark.slow
def test_forward_over_reverse_products_on_the_pool_equal_one_worker(monkeypatch, tmp_path: Path) -> None:
    """The CNN once took forward-over-reverse, whose forward-AD levels torch numbers process-wide: on two threads
    most clients failed ("forward AD level with an invalid index"). Serialised (``FORWARD_AD_LOCK``), the path
    gives the same bits on the pool as one client after another."""
    from perfedavg import curvature

    monkeypatch.setitem(curvature.HVP_PATH_BY_MODEL, "CNN", "forward")
    cnn = [*DIGITS, "model=cnn", "model.channels=[2,4]", "model.hidden=[8]", "hessian=hvp", "min_clients=6"]
    rounds = {}
    for workers in (1, 2):
        summary = run(compose([*cnn, f"inprocess_workers={workers}"]), tmp_path / str(workers))
        rounds[workers] = without_times(summary["rounds"])
    assert len(rounds[1]) >= 2
    assert rounds[2] == rounds[1]
