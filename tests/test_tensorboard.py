"""TensorBoard shows everything a run logs: a real TensorBoard (its default loader, on loopback) serves finished runs
(Per-FedAvg with curvature diagnostics, Ditto), and its HTTP data API is read back the way its UI reads it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from perfedavg.run.runner import compose, run

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def documented_tags() -> set[str]:
    """The tags the README's run-directory table lists for the event files."""
    row = next(line for line in README.splitlines() if line.startswith("| `events.out.tfevents.*`"))
    return set(re.findall(r"`((?:train|eval|time|clients|curvature)/[a-z_]+)`", row))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, body: dict | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-XSRF-Protected": "1"} if body is not None else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310 - loopback only
        return json.loads(reply.read())


@pytest.mark.slow
def test_a_real_tensorboard_serves_every_documented_tag(tmp_path: Path) -> None:
    logdir = tmp_path / "logs"
    run(compose(["experiment=smoke", "backend=inprocess", "diagnostics.every=1", "stability.every=1"]), logdir / "run")
    run(
        compose(["experiment=smoke", "backend=inprocess", "algorithm=ditto", "seed=1", "num_rounds=1"]),
        logdir / "ditto",
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, scalars = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            try:
                scalars = get(port, "/data/plugin/scalars/tags").get("run", {})
            except OSError:
                scalars = {}
            if "eval/global_acc" in scalars and any(t.startswith("curvature/") for t in scalars):
                break
            if server.poll() is not None:
                pytest.fail(f"tensorboard exited: {server.stderr.read()[-2000:]}")
            time.sleep(1)
        histograms = get(port, "/data/plugin/histograms/tags").get("run", {})
        documented = documented_tags()
        assert len(documented) > 20
        for tag in documented:
            if tag.endswith("_per_client"):
                if tag.startswith("eval/personalized_loss"):
                    continue  # regression runs only; this run is classification
                assert tag in histograms, (tag, sorted(histograms))
            else:
                assert tag in scalars, (tag, sorted(scalars))
        assert not [t for t in scalars if t.startswith("hparams/")]  # HParams reads the real tags, no copies

        plugins = get(port, "/data/plugins_listing")
        assert plugins["custom_scalars"]["enabled"] and plugins["hparams"]["enabled"]
        layout = get(port, "/data/plugin/custom_scalars/layout")
        charts = [c["multiline"]["tag"] for cat in layout["category"] for c in cat["chart"]]
        assert ["eval/personalized_acc"] in charts and ["eval/global_acc"] in charts  # one measure per chart
        assert all(len(tags) == 1 for tags in charts), charts
        assert layout["category"][0]["title"].startswith("accuracy")

        experiment = get(port, "/data/plugin/hparams/experiment", {"experimentName": ""})
        metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"eval/personalized_acc", "eval/global_acc", "train/loss"} <= metrics
        assert all(scalars.get(tag) is not None for tag in metrics)  # every HParams metric is a served scalar
        # Built from both runs: every string or integer key has its values as a discrete domain (no
        # "without discrete domain values" warning, and a filter in the side panel); what differs is marked.
        infos = {h["name"]: h for h in experiment["hparamInfos"]}
        assert sorted(infos["algorithm"]["domainDiscrete"]) == ["ditto", "perfedavg"]
        assert sorted(infos["seed"]["domainDiscrete"]) == ["0", "1"]
        assert infos["hessian"]["domainDiscrete"] == ["hvp"]  # Ditto does not read it: not recorded
        assert "algorithm.lam" in infos and "delta" not in infos  # Ditto's own key; neither run reads delta
        differing = {name for name, h in infos.items() if h.get("differs")}
        assert {"algorithm", "seed", "num_rounds"} <= differing and "alpha" not in differing
        for name, h in infos.items():
            if h["type"] == "DATA_TYPE_STRING":
                assert h.get("domainDiscrete"), name
        groups = get(
            port,
            "/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
                "colParams": [],
                "startIndex": 0,
                "sliceSize": 10,
            },
        )
        assert len(groups["sessionGroups"]) == 2
    finally:
        server.terminate()
        server.wait(timeout=30)
