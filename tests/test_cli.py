"""The ``perfedavg`` command: bad input stops early with a clear message; groups compose; multirun works."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import PERFEDAVG, cli

from perfedavg import task
from perfedavg.cli.main import check_composes
from perfedavg.config import ConfigError, check_overrides, to_container, validate
from perfedavg.run.runner import CONF_DIR, compose, prepare

BAD_INPUTS = [
    # (overrides, fragments the message must contain)
    (["hessian=bogus"], ["hessian=bogus", "allowed: diag, exact, fd, fo, hvp"]),
    (["alpah=0.1"], ["alpah=0.1", "did you mean 'alpha'", "allowed:"]),
    (["hessian.max_memroy_gb=2"], ["max_memroy_gb", "did you mean 'max_memory_gb'"]),
    (["clients_per_round=10"], ["clients_per_round=10", "did you mean 'fraction'"]),  # another tool's name
    (["lr=0.1"], ["lr=0.1", "did you mean 'beta'"]),
    (["algorithm.lamda=1", "algorithm=ditto"], ["algorithm.lamda=1", "did you mean 'lam'"]),
    (["step_sizes.fo.alpha=0.1"], ["step_sizes.fo.alpha=0.1", "no step_sizes table"]),
    (["algorithm=local", "beta=0.1"], ["beta=0.1", "no effect with algorithm=local"]),
    (["alpha=-1"], ["alpha=-1.0", "must be a positive number"]),
    (["beta=0"], ["beta=0.0", "must be a positive number"]),
    (["local_steps=0"], ["local_steps=0", "positive integer"]),
    (["batch_size=-3"], ["batch_size=-3", "positive integer"]),
    (["fraction=1.5"], ["fraction=1.5", "(0, 1]"]),
    (["fraction=0"], ["fraction=0.0", "(0, 1]"]),
    (["alpha=abc"], ["alpha", "abc", "Float"]),
    (["local_steps=2.5"], ["local_steps", "2.5"]),
    (["num_clients=500"], ["num_clients=500", "partition=dirichlet", "largest that works is num_clients=179"]),
    (
        ["num_clients=500", "partition=pathological"],
        ["num_clients=500", "fewer than 10 examples", "num_clients=150 works"],
    ),
    (["partition=iid", "dataset=synthetic", "model=mlp"], ["partition=iid", "dataset=synthetic", "partition=natural"]),
    (["partition=paper", "partition.images_per_class=7"], ["partition.images_per_class=7", "even number"]),
    (["partition=cyclic"], ["partition=cyclic", "allowed: dirichlet, iid, natural, paper, pathological, shard"]),
    (
        ["partition=pathological", "partition.classes_per_client=11"],
        ["partition.classes_per_client=11", "between 1 and 10"],
    ),
    (
        ["dataset=mnist", "dataset.cache_dir=${hydra:runtime.cwd}/no-cache"],
        ["dataset=mnist", "perfedavg.data.fetch mnist"],
    ),
    (["hessian=exact", "hessian.max_memory_gb=0.1"], ["P = 20,810", "hessian.max_memory_gb = 0.10 GB", "hessian=hvp"]),
    (["model=ann"], ["model=ann", "dataset=regression", "dataset=digits"]),
    (["hessian.mode=newton"], ["newton", "exact, hvp, fd, diag, fo"]),
    (["min_clients=11"], ["min_clients=11", "more than the 10 clients sampled per round"]),
    (["hydra.run.dir=/etc/hostname/run"], ["output directory /etc/hostname/run", "is a file, not a directory"]),
    (["client_gpus=-1"], ["client_gpus=-1.0", "must be ≥ 0"]),
    (["+foo=1"], ["+foo=1: adding keys is not supported", "key=value"]),
    (["~alpha"], ["~alpha: deleting keys is not supported"]),
    (["dataset.path=/nonexistent"], ["dataset.path=/nonexistent: has no effect with dataset=digits", "mnist"]),
    (["diagnostics.every=-1"], ["diagnostics.every=-1", "must be ≥ 0"]),
    (
        ["num_clients=100000", "partition=pathological"],
        ["num_clients=100000", "cannot be split into that many", "largest that works is num_clients=150"],
    ),
    (["client_cpus=4096"], ["client_cpus=4096: more than the", "CPUs of this machine", "client_cpus ≤"]),
    (["algorithm=fedavg", "diagnostics.every=5"], ["diagnostics.every=5: has no effect with algorithm=fedavg"]),
    (["hessian=hvp", "delta=0.01"], ["delta=0.01: has no effect with hessian=hvp", "hessian=fd"]),
    (["-m", "seed=0,1", "alpha=0.1,abc"], ["alpha=abc", "could not be converted to Float"]),
    (["ray_address=localhost"], ["ray_address=localhost: must be auto", "HOST:PORT"]),
    (["backend=inprocess", "ray_address=auto"], ["ray_address=auto: has no effect with backend=inprocess"]),
    (["backend=ray", "inprocess_workers=2"], ["inprocess_workers=2: has no effect with backend=ray"]),
    (["ray_address=127.0.0.1:9"], ["ray_address=127.0.0.1:9: cannot join a Ray cluster there", "ray start --head"]),
    # A bad value in the middle of a sweep stops the sweep before its first job (ranges and data checks included).
    (["-m", "alpha=0.1,-1,0.2", "experiment=smoke"], ["in the sweep's job alpha=-1", "must be a positive number"]),
    (["-m", "num_clients=4,5000,6", "experiment=smoke"], ["in the sweep's job num_clients=5000", "largest that works"]),
    (["alpha", "=", "0.1"], ["alpha = 0.1: an override is key=value without spaces around '='"]),
]
if not __import__("torch").cuda.is_available():  # the CI machine has no GPU: asking for one is a user error there
    BAD_INPUTS.append((["device=cuda"], ["device=cuda: no CUDA GPU is visible to PyTorch", "use device=cpu"]))


@pytest.mark.parametrize("overrides, fragments", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_stops_early_with_a_clear_message(overrides, fragments, tmp_path: Path) -> None:
    out = cli(overrides, tmp_path, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 2, text  # every user error, Hydra's type errors included
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert "| train/loss" not in text  # no round ran
    assert not list(tmp_path.rglob("events.out.tfevents*"))


@pytest.mark.parametrize(
    "overrides",
    [
        [f"model={m}", f"dataset={d}", f"hessian={h}", f"algorithm={a}"]
        for (m, d), h, a in itertools.product(
            [("ann", "regression"), ("net", "digits"), ("mlp", "digits")],
            ["exact", "hvp", "fd", "diag", "fo"],
            ["perfedavg", "fedavg"],
        )
    ],
    ids=lambda o: "-".join(v.split("=")[1] for v in o),
)
def test_every_config_group_composes(overrides: list[str]) -> None:
    cfg = prepare(compose(overrides))
    assert cfg["model"]["name"] == overrides[0].split("=")[1]
    assert cfg["hessian"]["mode"] == overrides[2].split("=")[1]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_every_experiment_composes_and_overrides_the_root(experiment: str) -> None:
    cfg, root = compose([f"experiment={experiment}"]), compose([])
    validate(cfg)  # prepare() would also load the data: MNIST and CIFAR-10 are not on a CI machine
    assert to_container(cfg) != to_container(root)


@pytest.mark.parametrize(
    ("model", "dataset", "input_shape"),
    [
        ("net", "cifar10", [3, 32, 32]),
        ("net", "mnist", [1, 28, 28]),
        ("mlp", "fashion_mnist", [1, 28, 28]),
        ("mlp", "synthetic", [60]),
    ],
)
def test_model_input_follows_every_dataset(model: str, dataset: str, input_shape: list[int]) -> None:
    cfg = compose([f"model={model}", f"dataset={dataset}"])
    validate(cfg)
    c = to_container(cfg)
    assert c["model"]["input_shape"] == input_shape
    net = task.build_model(c["model"], seed=0)
    assert net(torch.zeros(2, *input_shape)).shape == (2, 10)


def test_model_input_follows_the_dataset() -> None:
    assert prepare(compose(["model=mlp"]))["model"]["input_shape"] == [1, 8, 8]
    assert prepare(compose(["model=net"]))["model"]["num_outputs"] == 10
    assert prepare(compose(["model=ann", "dataset=regression"]))["model"]["num_outputs"] == 5


def test_override_precheck_leaves_hydra_syntax_alone() -> None:
    check_overrides(
        ["-m", "hessian=hvp,fo", "seed=0,1,2", "+hydra.job.env_set.X=1", "hydra.run.dir=x", "experiment=null"],
        str(CONF_DIR),
    )
    with pytest.raises(ConfigError, match="seeed"):
        check_overrides(["seeed=1"], str(CONF_DIR))
    with pytest.raises(ConfigError, match=r"\+extra=1: adding keys is not supported"):
        check_overrides(["+extra=1"], str(CONF_DIR))


def test_a_key_read_by_some_run_of_a_sweep_is_accepted() -> None:
    check_composes(["-m", "hessian=fo,fd", "delta=0.01"])  # the fd runs read δ
    # dataset.path is read by the mnist job, so it is accepted; that job's data is then checked before any job runs
    with pytest.raises(ConfigError, match=r"in the sweep's job dataset=mnist dataset.path=/data: .*cannot load"):
        check_composes(["-m", "dataset=digits,mnist", "dataset.path=/data"])
    check_composes(["-m", "hydra/sweeper=step_sizes", "alpha=tag(log, interval(0.001, 0.1))"])  # left to the sweeper
    with pytest.raises(ConfigError, match="delta=0.01: has no effect with hessian=fo"):
        check_composes(["-m", "hessian=fo", "delta=0.01,0.1"])
    with pytest.raises(ConfigError, match=r"hessian.mode=newton: Invalid value 'newton', expected one of"):
        check_composes(["-m", "seed=0,1", "hessian.mode=fo,newton"])


@pytest.mark.slow
def test_multirun_gives_one_run_directory_per_job(tmp_path: Path) -> None:
    overrides = ["hessian=hvp,fo", "num_clients=3", "num_rounds=1", "fraction=1.0", "local_steps=1"]
    overrides.append("backend=inprocess")  # one Ray run per job costs seconds each; Ray's own tests: test_stopping
    out = cli(["-m", *overrides], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p.parent for p in tmp_path.glob("multirun/*/*/*/metrics.json"))
    assert len(jobs) == 2
    modes = {(j / ".hydra" / "overrides.yaml").read_text().split("hessian=")[1].split()[0] for j in jobs}
    assert modes == {"hvp", "fo"}
    # each run is named after its job number and what the sweep varies (TensorBoard shows these names; what every
    # job shares would push the varying part out of sight)
    assert sorted(j.name for j in jobs) == ["0_hessian=hvp", "1_hessian=fo"]
    assert all(list(j.glob("events.out.tfevents*")) for j in jobs)
    log = out.stdout + out.stderr
    assert "round 1/1" in log and "tensorboard --logdir" in log
    assert log.count("round 1/1 |") == 2  # one progress line per job
    assert "DEPRECATED" not in log and "alembic" not in log  # Hydra's plugin scan stays quiet (Ray's: test_stopping)


def test_a_nearly_full_disk_is_refused_before_the_run(monkeypatch, tmp_path: Path) -> None:
    import shutil
    from collections import namedtuple

    from perfedavg.run import runner

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * 10**6, 5 * 10**6))
    with pytest.raises(ConfigError, match="only 5 MB free on its disk; a run needs at least 200 MB"):
        runner.run(compose(["experiment=smoke"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_long_sweep_run_names_are_shortened_but_stay_distinct() -> None:
    from perfedavg.config import MAX_RUN_NAME, short_name

    assert short_name("hessian=fo,seed=1") == "hessian=fo,seed=1"
    assert short_name("experiment=a/b") == "experiment=a_b"  # never a sub-directory
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(short_name(long_a)) == MAX_RUN_NAME and short_name(long_a) != short_name(long_b)


def test_a_conf_dir_without_configs_is_named(tmp_path: Path) -> None:
    out = subprocess.run(
        [*PERFEDAVG, "experiment=smoke"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PERFEDAVG_CONF_DIR": str(tmp_path / "nowhere")},
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"PERFEDAVG_CONF_DIR={tmp_path / 'nowhere'}: no config.yaml there" in out.stderr


def test_a_ray_address_whose_listener_never_answers_fails_within_seconds(silent_and_closed_ports) -> None:
    """A loopback port with a listener that accepts nothing (Ray itself would wait minutes for its GCS), and a closed
    one: refused in one line within 10 s (the probe waits 4 s; the slack is for a loaded machine, where 5.1 s was
    seen; Ray's own retries would take minutes)."""
    import time

    from perfedavg.run.runner import join_ray_cluster

    silent_port, closed_port = silent_and_closed_ports
    for port, reason in ((silent_port, "no answer within"), (closed_port, "nothing answers")):
        cfg = {"ray_address": f"127.0.0.1:{port}", "verbose": False, "client_cpus": 1, "client_gpus": 0}
        started = time.monotonic()
        with pytest.raises(
            ConfigError, match=f"ray_address=127.0.0.1:{port}: cannot join a Ray cluster there .*{reason}"
        ):
            join_ray_cluster(cfg)
        assert time.monotonic() - started < 10


def test_a_mistake_is_named_before_pytorch_or_flower_is_imported() -> None:
    """Composing and the config's own checks need neither PyTorch nor Flower: a range error is named before either
    is imported (about a second, where their imports alone take several)."""
    script = (
        "import sys\n"
        "from perfedavg.cli import main as cli\n"
        "sys.argv = ['perfedavg', 'alpha=-1']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit as e:\n"
        "    print(e.code, sorted(m for m in ('torch', 'flwr', 'ray') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "2 []", (out.stdout, out.stderr)
    assert "alpha=-1.0: must be a positive number" in out.stderr
