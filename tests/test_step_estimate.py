"""The estimate said before a slow exact-mode run's first round."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from perfedavg.config import to_container
from perfedavg.federation import step_estimate
from perfedavg.federation.console import format_duration
from perfedavg.run.runner import compose, run


def config(*overrides: str) -> dict:
    return to_container(compose(["model=ann", "dataset=regression", "hessian=exact", *overrides]))


def test_a_round_is_its_clients_in_waves_times_its_steps() -> None:
    cfg = config("num_clients=10", "fraction=0.5", "local_steps=3", "backend=inprocess")
    assert step_estimate.round_estimate(cfg, 2.0) == 5 * 3 * 2.0  # in-process: one client at a time
    cfg_ray = {**cfg, "backend": "ray", "client_cpus": 1}
    waves = -(-5 // step_estimate.task.concurrent_clients(cfg_ray))
    assert step_estimate.round_estimate(cfg_ray, 2.0) == waves * 3 * 2.0


def test_the_line_names_the_step_time_and_appears_only_for_slow_rounds() -> None:
    cfg = config("num_clients=10", "fraction=1.0", "local_steps=5", "backend=inprocess")
    assert step_estimate.slow_round_line(cfg, 0.1, 30) is None  # 5 s a round: no line
    line = step_estimate.slow_round_line(cfg, 9.8, 30)
    assert line is not None
    assert "one local step takes 9.8 s" in line and "10 clients × 5 steps" in line
    assert "≈ 8m" in line and "30 rounds ≈ 4h05m" in line


def test_a_round_timeout_below_twice_the_estimate_is_warned_about() -> None:
    cfg = config("num_clients=10", "fraction=1.0", "local_steps=5", "backend=inprocess", "round_timeout_s=600")
    assert step_estimate.timeout_warning(cfg, 50.0) is None  # a client: 250 s, under half the limit
    warning = step_estimate.timeout_warning(cfg, 70.0)  # 350 s a client
    assert (
        warning is not None and "round_timeout_s=600: one client's local steps (in-process the limit is per" in warning
    )
    assert "≈ 6m here" in warning and "round_timeout_s=1440" in warning  # 4 × 350 s, rounded up to minutes
    ray = {**cfg, "backend": "ray"}  # the limit covers the round: its clients in waves
    warning = step_estimate.timeout_warning(ray, 50.0)
    waves = -(-10 // step_estimate.task.concurrent_clients(ray))
    assert warning is not None and f"a round is estimated at ≈ {format_duration(waves * 250.0)} here" in warning
    assert step_estimate.timeout_warning({**ray, "round_timeout_s": None}, 1e6) is None


def test_a_step_is_measured_on_the_runs_shapes(monkeypatch) -> None:
    """One local step of the run's own spec (mode, step sizes), on a batch of its batch size and input shape."""
    calls = []
    real = step_estimate.algorithms.local_update

    def recorded(model, loss_fn, x, y, spec, generator, **kwargs):
        calls.append((tuple(x.shape), tuple(y.shape), spec))
        return real(model, loss_fn, x, y, spec, generator, **kwargs)

    monkeypatch.setattr(step_estimate.algorithms, "local_update", recorded)
    cfg = config("batch_size=7", "alpha=0.03")
    measured = step_estimate.measure_local_step_s(cfg)
    assert 0 < measured < 30
    ((x_shape, y_shape, spec),) = calls  # exactly one timed update
    assert x_shape == (7, *cfg["model"]["input_shape"]) and y_shape[0] == 7
    assert spec.local_steps == 1 and spec.hessian == "exact" and spec.alpha == 0.03 and spec.batch_size == 7


def test_an_exact_run_says_the_estimate_before_its_first_round(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(step_estimate, "SLOW_ROUND_S", 0.0)  # the ANN is fast: make any round "slow"
    with caplog.at_level(logging.INFO, logger="perfedavg"):
        run(
            compose(["model=ann", "dataset=regression", "hessian=exact", "num_rounds=2", "backend=inprocess"]), tmp_path
        )
    lines = [r.getMessage() for r in caplog.records]
    first_round = next(i for i, m in enumerate(lines) if m.startswith("round 1/2"))
    estimate = [i for i, m in enumerate(lines) if m.startswith("hessian=exact: one local step takes")]
    assert estimate and estimate[0] < first_round


@pytest.mark.parametrize("hessian", ["hvp", "fo"])
def test_other_modes_measure_nothing(tmp_path: Path, monkeypatch, hessian: str) -> None:
    def refuse(cfg):
        raise AssertionError("measured a step for a mode that is never slow")

    monkeypatch.setattr(step_estimate, "measure_local_step_s", refuse)
    run(
        compose(["model=ann", "dataset=regression", f"hessian={hessian}", "num_rounds=1", "backend=inprocess"]),
        tmp_path,
    )
