"""``perfedavg-flwr-run``: ``flwr run`` with the CLI's checks first and the run's real outcome as its exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perfedavg.config import ConfigError

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def flwr_run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "perfedavg.cli.flwr_run", str(REPO), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--run-config", 'overrides="experiment=smoke hessian=bogus"'],
            "hessian=bogus: not an option of 'hessian'; allowed: diag, exact, fd, fo, hvp",
        ),
        (["--run-config", 'overrides="alpha=abc"'], "alpha=abc: Value 'abc' of type 'str' could not be converted"),
        (
            ["--federation-config", "num-supernodes=3", "--run-config", 'overrides="experiment=smoke"'],
            'num-supernodes=3: the run has num_clients=4, one SuperNode per client; use --federation-config "num-super'
            'nodes=4"',
        ),
        (["--bogus"], "--bogus: not an option of flwr run"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2_before_flower_starts(tmp_path: Path, args: list[str], message: str) -> None:
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "flwr")}  # Flower would create it: nothing of it may start
    out = flwr_run(args, tmp_path, env)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert f"perfedavg: error: {message}" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not (tmp_path / "flwr").exists()


@pytest.mark.slow
def test_the_exit_code_is_the_runs_outcome(tmp_path: Path) -> None:
    """A federation that fails at run time (Flower's default of 2 simulated SuperNodes for 4 clients, caught by the
    ServerApp in seconds) exits 1 naming the reason; the same run with 4 SuperNodes exits 0."""
    flwr_home = tmp_path / "flwr"
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "PYTHONWARNINGS": "ignore",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    overrides = f'overrides="experiment=smoke num_rounds=1" output-dir="{tmp_path / "runs"}"'
    try:
        failed = flwr_run(["--run-config", overrides], tmp_path, env)
        assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
        assert "ended finished:failed" in failed.stderr
        assert "only 2 of num_clients=4 client nodes (SuperNodes, one per client) connected in 10 s" in failed.stderr

        ok = flwr_run(
            ["--federation-config", "num-supernodes=4 client-resources-num-cpus=1", "--run-config", overrides],
            tmp_path,
            env,
        )
        assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
        assert "done in" in ok.stdout
        assert len(list((tmp_path / "runs").glob("*/metrics.json"))) == 1
    finally:  # the local SuperLink `flwr run` started for this FLWR_HOME (its SuperExec follows its parent)
        ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, timeout=30).stdout
        for line in ps.splitlines():
            if "flower-superlink" in line and str(flwr_home) in line:
                os.kill(int(line.split()[0]), signal.SIGTERM)
        deadline = time.monotonic() + 20  # a loaded 2-core machine takes a few seconds to shut the SuperLink down
        while True:
            ps = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True, timeout=30).stdout
            if str(flwr_home) not in ps or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert str(flwr_home) not in ps  # the test's SuperLink and SuperExec are gone


def test_help_describes_the_command(tmp_path: Path) -> None:
    out = flwr_run(["--help"], tmp_path)
    assert out.returncode == 0 and "perfedavg-flwr-run" in out.stdout and "honest exit code" in out.stdout


def flower_config(home: Path, default: str, **addresses: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    sections = "".join(f'[superlink.{name}]\naddress = "{a}"\ninsecure = true\n\n' for name, a in addresses.items())
    (home / "config.toml").write_text(f'[superlink]\ndefault = "{default}"\n\n{sections}')


def test_the_machine_checks_run_here_only_for_the_local_superlink(tmp_path: Path, monkeypatch) -> None:
    """A remote SuperLink's ServerApp checks the data set (and device, memory) where the run executes; the local one
    runs on this machine, so they are checked here, before anything starts."""
    from perfedavg.cli.flwr_run import check_run, runs_locally
    from perfedavg.data import DataError

    home = tmp_path / "flwr"
    monkeypatch.setenv("FLWR_HOME", str(home))
    assert runs_locally(None) and runs_locally("local") and not runs_locally("remote")  # no config file yet
    assert not home.exists()
    flower_config(home, "remote", local=":local:", remote="superlink.invalid:9093")
    assert not runs_locally(None) and runs_locally("local") and not runs_locally("unknown")
    args = ["--run-config", f'overrides="dataset=mnist dataset.path={tmp_path / "absent"} model=mlp"']
    assert check_run([".", *args])["dataset"]["path"] == str(tmp_path / "absent")  # to the remote default
    with pytest.raises(DataError, match="absent"):
        check_run([".", "local", *args])
    with pytest.raises(ConfigError, match="num_clients=0: must be"):  # ranges are checked for either
        check_run([".", "--run-config", 'overrides="num_clients=0"'])


def test_a_sweep_in_the_run_config_is_refused() -> None:
    from perfedavg.config.preparation import prepare_overrides

    with pytest.raises(
        ConfigError, match=r"hessian=fo,fd: a sweep runs several federations; start it with `perfedavg -m"
    ):
        prepare_overrides(["experiment=smoke", "hessian=fo,fd"])
