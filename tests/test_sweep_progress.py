"""The sweep-level progress line: job counts, the line itself, and a real multirun printing it."""

from __future__ import annotations

from perfedavg.run.sweep_progress import count_jobs, progress_line


def test_the_job_count_of_a_sweep() -> None:
    assert count_jobs(["hessian=fo,fd,hvp", "seed=0,1,2,3,4", "alpha=0.1"]) == 15
    assert count_jobs(["seed=range(0,4)", "experiment=smoke"]) == 4
    assert count_jobs(["alpha=0.1"]) == 1
    assert count_jobs(["alpha=interval(0.001,0.3)"], n_trials=20) == 20  # an Optuna study: its number of trials
    assert count_jobs(["alpha=interval(0.001,0.3)"]) is None


def test_the_progress_line() -> None:
    state = {"total": 15, "start": 1000.0}
    ok, failed = {"num": 0, "ok": True}, {"num": 1, "ok": False}
    assert progress_line(state, [ok] * 5, now=1000.0 + 25 * 60) == "[sweep] 5/15 runs ended | 25m elapsed | ETA 50m"
    assert progress_line(state, [ok, failed], now=1030.0) == "[sweep] 2/15 runs ended (1 failed) | 30s elapsed | ETA 3m"
    assert progress_line(state, [ok] * 15, now=1000.0 + 3900) == "[sweep] 15/15 runs ended | 1h05m elapsed | all done"
    assert progress_line({"total": None, "start": 1000.0}, [ok], now=1010.0) == "[sweep] 1/? runs ended | 10s elapsed"
