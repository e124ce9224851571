"""Checkpoints and resume: a run killed with SIGKILL and resumed ends exactly as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import cli, without_times

from perfedavg import checkpoint
from perfedavg.config import ConfigError, resume
from perfedavg.run.runner import compose, prepare

COMMON = ["model=ann", "dataset=regression", "backend=inprocess", "num_clients=6", "local_steps=10"]


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["perfedavg", "ditto", "local"])
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path: Path, algorithm: str) -> None:
    """Also for Ditto and Local, whose clients' own models (Context.state) die with the process: the resumed run sends
    each client its state from the checkpoint, and every round, personalized metrics included, comes out the same."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rounds = 25
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = [*COMMON, f"algorithm={algorithm}", "fraction=0.5"]
    out = cli([*args, f"num_rounds={rounds}", f"hydra.run.dir={full}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]

    # Killed mid-round 4, wherever the machine's speed would have it: every client hangs in round 4's training
    # (perfedavg.testing.faults), so the kill comes after round 3's checkpoint and before round 4's.
    hang = [f"stall:{client}:4:600" for client in range(6)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "perfedavg.testing.faults", *hang, "--", *args, f"num_rounds={rounds}"]
        + [f"hydra.run.dir={killed}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and (checkpoint.load(killed) or {}).get("round") != 3:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    saved = checkpoint.load(killed)
    done = saved["round"]
    assert done == 3, f"the run was not killed in round 4 (checkpoint at round {done})"
    assert bool(saved.get("client_states")) == (algorithm in ("ditto", "local"))
    assert not (killed / "metrics.json").exists()

    out = cli([f"resume={killed}"], tmp_path)  # the original overrides come from the run directory
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming after round {done}" in out.stdout + out.stderr
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    assert b["final"] == a["final"]
    assert without_times(b["rounds"]) == without_times(a["rounds"])

    # One TensorBoard log: every round once, the interrupted run's stale events purged.
    acc = EventAccumulator(str(killed), size_guidance={"scalars": 0}).Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, rounds + 1))
    assert acc.Scalars("train/loss")[-1].value == pytest.approx(a["final"]["train/loss"])


@pytest.mark.slow
def test_resume_refuses_a_config_that_changes_results(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert cli([*COMMON, "num_rounds=2", f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    out = cli([f"resume={run_dir}", "alpha=0.2", "batch_size=4"], tmp_path)
    assert out.returncode == 2
    assert "alpha: 0.05 → 0.2" in out.stderr and "batch_size: 16 → 4" in out.stderr
    assert "Traceback" not in out.stderr
    extended = cli([f"resume={run_dir}", "num_rounds=3"], tmp_path)  # more rounds is allowed: it extends the run
    assert extended.returncode == 0, extended.stderr[-2000:]
    assert checkpoint.load(run_dir)["round"] == 3


def test_resume_errors_name_the_problem(tmp_path: Path) -> None:
    out = cli([f"resume={tmp_path / 'nowhere'}"], tmp_path)
    assert out.returncode == 2 and "not a perfedavg run directory" in out.stderr
    with pytest.raises(ConfigError, match="no checkpoint there"):
        prepare(compose([f"resume={tmp_path}"]))


def state_of(round_: int) -> dict:
    import numpy as np
    import torch

    rng = np.random.default_rng(round_).bit_generator.state
    return {
        "round": round_,
        "weights": {"w": torch.full((2,), float(round_))},
        "sample_rng": rng,
        "eval_rng": rng,
        "rounds": [{"round": r, "train/loss": 1.0 / r} for r in range(1, round_ + 1)],
        "client_failures": 0,
        "config": {"num_rounds": 5, "dataset": {"name": "digits", "path": None}},
    }


def test_checkpoints_are_written_atomically_and_keep_the_previous_one(tmp_path: Path) -> None:
    checkpoint.save(tmp_path, state_of(1))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]
    assert checkpoint.load(tmp_path)["round"] == 1  # a directory without previous.pt (also those written before it)
    checkpoint.save(tmp_path, state_of(2))
    checkpoint.save(tmp_path, state_of(3))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "previous.pt"]  # no temporary
    assert checkpoint.load(tmp_path)["round"] == 3
    assert checkpoint.load(tmp_path)["sample_rng"] == state_of(3)["sample_rng"]  # 128-bit ints survive weights_only
    (tmp_path / "checkpoints" / "last.pt").unlink()
    assert checkpoint.load(tmp_path)["round"] == 2
    diffs = resume.result_differences(
        {"alpha": 0.1, "hessian": {"mode": "hvp"}, "verbose": False},
        {"alpha": 0.1, "hessian": {"mode": "fo"}, "verbose": True},
    )
    assert diffs == ["hessian.mode: hvp → fo"]


def test_a_changed_step_size_table_or_diagnostics_do_not_block_a_resume_but_a_changed_alpha_does() -> None:
    """``step_sizes`` acts only through the resolved ``alpha``/``beta`` (compared); diagnostics only add curves. A
    checkpoint from before the ``diagnostics`` key existed still resumes."""
    saved = {"alpha": 0.1, "beta": 0.2, "step_sizes": {"fo": {"alpha": 0.1, "beta": 0.2}, "fd": {"alpha": 1.0}}}
    now = {
        "alpha": 0.1,
        "beta": 0.2,
        "step_sizes": {"fo": {"alpha": 0.1, "beta": 0.2}, "fd": {"alpha": 0.5}},
        "diagnostics": {"every": 10},
    }
    assert resume.result_differences(saved, now) == []
    assert resume.result_differences(saved, {**now, "alpha": 0.3}) == ["alpha: 0.1 → 0.3"]


def test_a_checkpoint_from_before_adapt_batch_resumes_at_its_default_but_not_at_another_value() -> None:
    saved = {"alpha": 0.1, "algorithm": {"name": "perfedavg"}}  # written before the key existed: whole split
    assert resume.result_differences(saved, {**saved, "adapt_batch": None}) == []
    assert resume.result_differences(saved, {**saved, "adapt_batch": 100}) == ["adapt_batch: None → 100"]


def test_a_non_finite_global_model_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch) -> None:
    """The global model can only turn non-finite in aggregation (non-finite updates are excluded before it), e.g.
    by overflow; force that in round 3 and check the stop, the message and what is kept."""
    import torch

    from perfedavg.engines.client_app import app
    from perfedavg.engines.inprocess_grid import InProcessGrid
    from perfedavg.federation import loop as federation
    from perfedavg.federation.record import run_and_record

    real_aggregate = federation.aggregate
    calls = {"n": 0}

    def overflowing(updates, weights):
        calls["n"] += 1
        out = real_aggregate(updates, weights)
        return {k: torch.full_like(v, float("inf")) for k, v in out.items()} if calls["n"] == 3 else out

    monkeypatch.setattr(federation, "aggregate", overflowing)
    cfg = prepare(compose([*COMMON, "num_rounds=5"]))
    with pytest.raises(federation.FederationError, match=r"round 3: the aggregated global model is not finite.*alpha="):
        run_and_record(InProcessGrid(app, cfg["num_clients"]), cfg, tmp_path)
    state = checkpoint.load(tmp_path)
    assert state["round"] == 2 and all(torch.isfinite(v).all() for v in state["weights"].values())
    assert list(tmp_path.glob("events.out.tfevents*"))  # the log so far is kept


@pytest.mark.slow
def test_resume_auto_starts_continues_and_skips_a_finished_run(tmp_path: Path) -> None:
    """What a re-run sweep (perfedavg-reproduce with the same --sweep-dir) relies on."""
    auto, straight = tmp_path / "auto", tmp_path / "straight"
    out = cli([*COMMON, "num_rounds=2", "resume=auto", f"hydra.run.dir={auto}"], tmp_path)  # nothing there: fresh
    assert out.returncode == 0, out.stderr[-2000:]
    assert checkpoint.load(auto)["round"] == 2
    out = cli([*COMMON, "num_rounds=4", "resume=auto", f"hydra.run.dir={auto}"], tmp_path)  # short of 4: continues
    assert out.returncode == 0, out.stderr[-2000:]
    assert "continuing from the checkpoint of round 2" in out.stdout + out.stderr
    assert cli([*COMMON, "num_rounds=4", f"hydra.run.dir={straight}"], tmp_path).returncode == 0
    resumed = json.loads((auto / "metrics.json").read_text())
    uninterrupted = json.loads((straight / "metrics.json").read_text())["rounds"]
    assert without_times(resumed["rounds"]) == without_times(uninterrupted)
    before = (auto / "metrics.json").stat().st_mtime_ns
    out = cli([*COMMON, "num_rounds=4", "resume=auto", f"hydra.run.dir={auto}"], tmp_path)  # finished: kept
    assert out.returncode == 0 and "already complete (4 rounds)" in out.stdout + out.stderr
    assert (auto / "metrics.json").stat().st_mtime_ns == before
    out = cli([*COMMON, "num_rounds=4", "alpha=0.5", "resume=auto", f"hydra.run.dir={auto}"], tmp_path)
    assert out.returncode == 2 and "alpha: 0.05 → 0.5" in out.stderr  # another config never stands in for this one
    assert (auto / "metrics.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("gpu", [False, True])
def test_resume_compares_where_clients_compute_not_how_the_device_is_spelled(gpu: bool, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    same_here = [] if not gpu else ["device: cuda → cpu"]
    assert resume.result_differences({"device": "auto"}, {"device": "cpu"}) == same_here
    assert resume.result_differences({}, {"device": "auto"}) == ([] if not gpu else ["device: cpu → cuda"])
    assert resume.result_differences({"device": "cuda"}, {"device": "auto"}) == (
        ["device: cuda → cpu"] if not gpu else []
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, damage: str, caplog) -> None:
    checkpoint.save(tmp_path, state_of(1))
    checkpoint.save(tmp_path, state_of(2))
    last = tmp_path / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    state = checkpoint.load(tmp_path)
    assert state["round"] == 1
    assert "last.pt cannot be read" in caplog.text and "using the previous checkpoint (round 1)" in caplog.text
    checkpoint.load(tmp_path)  # a resume reads it in several checks: the warning is said once
    assert caplog.text.count("using the previous checkpoint") == 1


@pytest.mark.slow
def test_no_readable_checkpoint_is_a_clear_error_and_exit_2(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert cli([*COMMON, "num_rounds=2", f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    for name in ("last.pt", "previous.pt"):
        (run_dir / "checkpoints" / name).write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"last.pt cannot be read.*the previous checkpoint too: .*previous.pt"):
        prepare(compose([*COMMON, f"resume={run_dir}"]))
    out = cli([f"resume={run_dir}"], tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.startswith("perfedavg: error: resume=") and "cannot be read" in out.stderr
    assert "Traceback" not in out.stderr


class Payload:
    """Stands for pickled code in a checkpoint from an untrusted directory."""

    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_loading_never_runs_pickled_code(tmp_path: Path, monkeypatch) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        {**state_of(1), "version": checkpoint.FORMAT_VERSION, "extra": Payload()}, tmp_path / "checkpoints" / "last.pt"
    )
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.load(tmp_path)
    assert not (tmp_path / "pwned.txt").exists()


def test_a_full_disk_mid_run_stops_with_one_line_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    import errno

    import torch

    from perfedavg.engines.client_app import app
    from perfedavg.engines.inprocess_grid import InProcessGrid
    from perfedavg.federation import FederationError
    from perfedavg.federation.record import run_and_record

    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # round 3's checkpoint file (each round serialises its state, then writes the file)
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    cfg = prepare(compose([*COMMON, "num_rounds=5"]))
    with pytest.raises(FederationError) as stopped:
        run_and_record(InProcessGrid(app, cfg["num_clients"]), cfg, tmp_path)
    message = str(stopped.value)
    assert message == (
        f"round 3: cannot write the checkpoint in {tmp_path / 'checkpoints'} (No space left on device); "
        "the last good checkpoint there: round 2"
    )
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "previous.pt"]
    assert checkpoint.load(tmp_path)["round"] == 2
