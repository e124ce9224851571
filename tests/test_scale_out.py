"""Scaling out on engines people already run: a simulation joins a running Ray cluster (``ray_address``), and sweeps
go through Hydra's submitit launcher (SLURM preset; run here through ``submitit_local``)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from perfedavg.run.runner import compose, run

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ray_head():
    """``ray start --head --block`` on loopback with 2 CPUs, in its own process group; stopped (only it: ``ray stop``
    would stop every Ray instance of this machine) when the test ends. Its temporary directory is short: Ray's Unix
    sockets live there and a socket path may not exceed 107 bytes (pytest's tmp_path can)."""
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    status = [str(BIN / "ray"), "status", f"--address={address}"]
    while subprocess.run(status, capture_output=True, timeout=60).returncode:
        assert head.poll() is None, "ray start --head exited"
        assert time.monotonic() < deadline, "the Ray head did not come up in 120 s"
        time.sleep(2)
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_a_simulation_joins_a_running_ray_cluster(ray_head: str, tmp_path: Path, caplog) -> None:
    overrides = ["num_clients=3", "num_rounds=2", "fraction=1.0", "local_steps=2"]
    with caplog.at_level("INFO", logger="perfedavg"):
        joined = run(compose([*overrides, f"ray_address={ray_head}"]), tmp_path / "cluster")
    assert f"joined the Ray cluster at {ray_head}: 1 node(s), 2 CPUs" in caplog.text
    alone = run(compose([*overrides, "backend=inprocess"]), tmp_path / "inprocess")
    assert joined["final"] == alone["final"]  # same federation, wherever its clients ran
    status = subprocess.run(
        [str(BIN / "ray"), "status", f"--address={ray_head}"], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, "the run stopped the cluster it joined"


def perfedavg(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "perfedavg"), *args], capture_output=True, text=True, cwd=cwd, timeout=900, check=False
    )


def test_the_slurm_preset_uses_the_submitit_launcher(tmp_path: Path) -> None:
    out = perfedavg(["hydra/launcher=slurm", "--cfg", "hydra"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "_target_: hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out.stdout
    assert "max_num_timeout: 3" in out.stdout


@pytest.mark.slow
def test_a_sweep_runs_through_the_submitit_launcher(tmp_path: Path) -> None:
    """The SLURM path without SLURM: the same launcher plugin, jobs as local subprocesses."""
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}", "experiment=smoke"]
    out = perfedavg([*args, "backend=inprocess", "seed=0,1", "resume=auto"], tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    finals = {p.parent.name: json.loads(p.read_text())["final"] for p in sweep.glob("*/metrics.json")}
    first, second = "0_seed=0", "1_seed=1"  # named after what the sweep varies
    assert sorted(finals) == [first, second]
    assert finals[first] != finals[second]
    alone = run(compose(["experiment=smoke", "backend=inprocess", "seed=1"]), tmp_path / "alone")
    assert finals[second] == pytest.approx(alone["final"], rel=1e-6)
