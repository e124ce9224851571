"""The same apps on Flower's Deployment Engine: a SuperLink and two SuperNodes on loopback, driven by `flwr run`."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perfedavg.engines.client_app import app as client_app
from perfedavg.engines.inprocess_grid import InProcessGrid
from perfedavg.federation.record import run_and_record
from perfedavg.run.runner import compose, prepare

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
OVERRIDES = "model=ann dataset=regression num_clients=2 num_rounds=2 fraction=1.0 local_steps=2"


def superlink_command(port: int, host: str | None = None) -> list[str]:
    return [
        "flower-superlink",
        "--insecure",
        "--disable-runtime-dependency-installation",
        *(["--host", host] if host else []),
        "--port",
        str(port),
    ]


def supernode_command(superlink: str, partition: int, partitions: int, port: int, host: str | None = None) -> list[str]:
    return [
        "flower-supernode",
        "--insecure",
        "--superlink",
        superlink,
        "--node-config",
        f"partition-id={partition} num-partitions={partitions}",
        *(["--host", host] if host else []),
        "--port",
        str(port),
    ]


def in_venv(command: list[str]) -> list[str]:
    return [str(BIN / command[0]), *command[1:]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_two_supernodes_on_loopback_run_two_rounds(tmp_path: Path) -> None:
    link_port, node_ports = free_port(), [free_port(), free_port()]
    flwr_home = tmp_path / "flwr"
    flwr_home.mkdir()
    connection = f'address = "127.0.0.1:{link_port}"\ninsecure = true\n'
    (flwr_home / "config.toml").write_text(f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\n{connection}')
    env = {
        **os.environ,
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "PYTHONWARNINGS": "ignore",
        "FLWR_DISABLE_UPDATE_CHECK": "1",  # no network look-ups from a test
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # the SuperLink starts flower-superexec from PATH
    }
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("superlink", "node0", "node1")}  # noqa: SIM115
    procs: list[subprocess.Popen] = []

    def start(name: str, cmd: list[str]) -> None:
        procs.append(
            subprocess.Popen(
                cmd, cwd=tmp_path, env=env, stdout=logs[name], stderr=subprocess.STDOUT, start_new_session=True
            )
        )  # its own process group: killed whole below

    try:
        start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--insecure",
                "--disable-runtime-dependency-installation",
                "--port",
                str(link_port),
            ],
        )
        wait_for(lambda: port_open(link_port), 90, "the SuperLink")
        for i, port in enumerate(node_ports):
            start(
                f"node{i}",
                [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{link_port}",
                    "--node-config",
                    f"partition-id={i} num-partitions=2",
                    "--port",
                    str(port),
                ],
            )
        link_log = tmp_path / "superlink.log"
        wait_for(lambda: link_log.read_text().count("Activated node_id") >= 2, 90, "two SuperNodes to register")

        out_dir = tmp_path / "runs"
        run = subprocess.run(
            [
                str(BIN / "flwr"),
                "run",
                str(REPO),
                "loopback",
                "--stream",
                "--run-config",
                f'overrides="{OVERRIDES}" output-dir="{out_dir}"',
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        found = list(out_dir.glob("*/metrics.json"))
        assert len(found) == 1, (run.stdout[-3000:], [p.read_text()[-1000:] for p in tmp_path.glob("*.log")])
        deployed = json.loads(found[0].read_text())
        streamed = run.stdout + run.stderr
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
        for f in logs.values():
            f.close()

    assert [r["round"] for r in deployed["rounds"]] == [1, 2]
    assert deployed["client_failures"] == 0
    cfg = prepare(compose(OVERRIDES.split()))
    simulated = run_and_record(InProcessGrid(client_app, cfg["num_clients"]), cfg, tmp_path / "sim")
    assert deployed["final"] == simulated["final"]  # same apps, same config, same numbers
    # the closing line is the CLI's, formatted (not a Python dict)
    closing = r"done in [0-9.]+ s: eval/global_loss [0-9.]+, eval/personalized_loss [0-9.]+, train/loss [0-9.]+"
    assert re.search(closing, streamed), streamed[-2000:]


def test_compose_file_runs_the_commands_the_loopback_test_proves() -> None:
    """Docker cannot run here: check that docker/compose.yml uses the same entry points and flags as above."""
    import yaml

    compose_file = yaml.safe_load((REPO / "docker" / "compose.yml").read_text())
    services = compose_file["services"]
    assert services["superlink"]["command"] == superlink_command(18000, host="0.0.0.0")
    nodes = sorted(name for name in services if name.startswith("supernode-"))
    assert len(nodes) == 2
    for i, name in enumerate(nodes):
        assert services[name]["command"] == supernode_command("superlink:18000", i, 2, 19095 + i, host="0.0.0.0")
        assert "superlink" in services[name]["depends_on"]
    for service in services.values():
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        entry = service["command"][0]
        assert (BIN / entry).exists(), f"{entry} is not an installed entry point"
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "pip install ." in dockerfile and "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1" in dockerfile
    assert "pip install -e" not in dockerfile, "the image installs as a user does (the wheel carries the configs)"
    for path in ("pyproject.toml", "perfedavg", "conf"):
        assert f"COPY {path}" in dockerfile
