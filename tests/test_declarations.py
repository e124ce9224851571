"""An algorithm declares itself once (perfedavg/algorithms/declaration.py) and the rest of the program reads that:
its config file, validation, the keys a resume compares, HPARAMS, the tuner's search space and the reports; the Local
baseline and an installed plugin are added without touching anything else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import yaml
from support import cli, without_times

from perfedavg import algorithms, curvature
from perfedavg.algorithms import Algorithm, LocalResult, LocalSpec
from perfedavg.algorithms.declaration import Declaration
from perfedavg.config import ConfigError, ineffective_overrides, reads_key
from perfedavg.run.runner import CONF_DIR, compose, prepare

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["model=ann", "dataset=regression", "backend=inprocess", "num_clients=4", "local_steps=3"]


def test_every_built_in_algorithm_has_its_config_file_with_its_declared_defaults_and_vice_versa() -> None:
    files = {p.stem: yaml.safe_load(p.read_text()) for p in (CONF_DIR / "algorithm").glob("*.yaml")}
    declared = {cls.declaration.name: cls.declaration for cls in algorithms.built_in()}
    assert set(files) == set(declared)
    for name, d in declared.items():
        assert files[name] == {"name": name, **d.defaults()}, name
        assert algorithms.get(name).name == name and algorithms.get(name).stateful == d.stateful


def test_an_algorithm_that_keeps_the_base_evaluation_reads_adapt_steps() -> None:
    """The trap the declaration closes: a method that inherits the base class's personalize-then-evaluate reads
    adapt_steps without saying so; one that evaluates its own way does not."""

    class Plain(Algorithm):
        declaration: ClassVar[Declaration] = Declaration(name="plain", title="Plain")

    assert algorithms.reads("fedavg") == Plain.reads() == {"alpha", "beta", "adapt_steps", "adapt_batch"}
    for own_evaluation in ("ditto", "local", "pfedme"):
        assert not {"adapt_steps", "adapt_batch"} & algorithms.reads(own_evaluation)
    assert algorithms.reads("perfedavg") == {
        "alpha",
        "beta",
        "adapt_steps",
        "adapt_batch",
        "delta",
        "diagnostics.every",
        "stability.every",
        "stability.safeguard",
    }


def test_keys_are_checked_against_the_chosen_algorithms_declaration() -> None:
    cfg = compose(["algorithm=ditto"])
    assert ineffective_overrides(cfg, ["algorithm.lam=0.5", "adapt_steps=3", "delta=0.01"]) == [
        "adapt_steps=3: has no effect with algorithm=ditto; it is read only with algorithm=fedavg or fedavg_ft or "
        "fedavg_matched or perfedavg (remove it, or choose one of those)",
        "delta=0.01: has no effect with algorithm=ditto; it is read only with algorithm=perfedavg (remove it, or "
        "choose one of those)",
        "delta=0.01: has no effect with hessian=hvp; it is read only with hessian=fd (remove it, or choose one of "
        "those)",
    ]
    assert reads_key(to_plain(compose(["algorithm=pfedme"])), "algorithm.inner_steps")
    assert not reads_key(to_plain(compose(["algorithm=ditto"])), "algorithm.inner_steps")
    with pytest.raises(ConfigError, match=r"algorithm.lam=-1.0: must be ≥ 0"):
        prepare(compose(["algorithm=ditto", "algorithm.lam=-1"]))


def to_plain(cfg) -> dict:
    from perfedavg.config import to_container

    return to_container(cfg)


def test_the_command_line_names_a_key_another_algorithm_reads_and_a_wrong_step_size_table(tmp_path: Path) -> None:
    out = cli(["algorithm.inner_steps=3", "num_rounds=1"], tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "algorithm.inner_steps=3: has no effect with algorithm=perfedavg; it is read only with algorithm=pfedme" in (
        out.stderr
    )
    out = cli(["experiment=paper_mnist_tuned", "step_sizes.fo.lam=1"], tmp_path)
    assert out.returncode == 2 and "step_sizes.fo.lam=1: not a key the method tunes; allowed: alpha, beta" in out.stderr
    out = cli(["step_sizes.fo.alpha=0.1"], tmp_path)  # no table without a tuned experiment
    assert out.returncode == 2 and "this config has no step_sizes table" in out.stderr, out.stderr


def test_local_trains_each_clients_own_model_and_leaves_the_global_one_alone() -> None:
    torch.manual_seed(0)
    model, loss_fn = torch.nn.Linear(3, 2).double(), torch.nn.MSELoss()
    x, y = torch.randn(40, 3, dtype=torch.float64), torch.randn(40, 2, dtype=torch.float64)
    w0 = curvature.flat_parameters(model)
    own = w0 + 0.5
    spec = LocalSpec(algorithm="local", alpha=0.1, beta=123.0, local_steps=4, batch_size=8)
    local = algorithms.get("local")
    result = local.local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(1), state=own)
    assert torch.equal(result.weights, w0) and torch.equal(curvature.flat_parameters(model), w0)
    # its own model took FedAvg's local SGD with step α (β is not read), from its own weights
    fedavg_spec = LocalSpec(algorithm="fedavg", beta=0.1, local_steps=4, batch_size=8)
    curvature.set_flat_parameters(model, own)
    expected = algorithms.local_update(model, loss_fn, x, y, fedavg_spec, torch.Generator().manual_seed(1)).weights
    assert torch.equal(result.state, expected)
    averaged = {"weight": torch.ones(2, 3)}
    assert local.server_update({"weight": torch.zeros(2, 3)}, averaged, spec)["weight"].sum() == 0
    assert isinstance(result, LocalResult) and result.train_loss > 0


@pytest.mark.slow
def test_local_runs_on_both_backends_with_the_same_metrics(tmp_path: Path) -> None:
    """Local on Ray and in-process: every round's metrics agree; personalized beats the untrained global model."""
    from perfedavg.run.runner import run

    metrics = {}
    for backend in ("inprocess", "ray"):
        cfg = compose([*SMALL, "algorithm=local", "num_rounds=3", "alpha=0.05", f"backend={backend}"])
        metrics[backend] = run(cfg, tmp_path / backend)
    assert without_times(metrics["ray"]["rounds"]) == without_times(metrics["inprocess"]["rounds"])
    final = metrics["ray"]["final"]
    assert final["eval/personalized_loss"] < final["eval/global_loss"]
    assert len({r["eval/global_loss"] for r in metrics["ray"]["rounds"]}) == 1  # the global model never moves


PLUGIN = '''
from typing import ClassVar

from perfedavg.algorithms.declaration import Declaration, Key
from perfedavg.algorithms.fedavg import FedAvg


class HalfStep(FedAvg):
    """FedAvg whose local step is β · shrink (a plugin's algorithm: it only declares itself and subclasses)."""

    declaration: ClassVar[Declaration] = Declaration(
        name="half_step", title="Half step", keys=(Key("shrink", 0.5, "the step's factor"),)
    )

    def local_update(self, model, loss_fn, x, y, spec, generator, *, state=None, diagnose=False):
        from dataclasses import replace

        shrunk = replace(spec, beta=spec.beta * self.option(spec, "shrink"))
        return super().local_update(model, loss_fn, x, y, shrunk, generator, state=state, diagnose=diagnose)
'''


def install_plugin(tmp_path: Path, module: str = PLUGIN) -> Path:
    """Build and install (pip, offline, into its own directory) a package that registers ``half_step`` under the
    ``perfedavg.algorithms`` entry-point group; the directory to put on PYTHONPATH."""
    source = tmp_path / "plugin"
    (source / "half_step_plugin").mkdir(parents=True)
    (source / "half_step_plugin" / "__init__.py").write_text(textwrap.dedent(module))
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [build-system]
            requires = ["setuptools>=68"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "half-step-plugin"
            version = "0.0.1"
            [project.entry-points."perfedavg.algorithms"]
            half_step = "half_step_plugin:HalfStep"
            """
        )
    )
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    out = subprocess.run([*pip, "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return site


@pytest.mark.slow
def test_an_installed_plugin_adds_an_algorithm_by_name(tmp_path: Path) -> None:
    """A package with an entry point in ``perfedavg.algorithms`` runs as ``algorithm=half_step``: its key is
    validated from its declaration, it reads as it declares, and FedAvg at β/2 is what it computes."""
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(install_plugin(tmp_path)), os.environ.get("PYTHONPATH")]))}
    common = [*SMALL, "num_rounds=2", "beta=0.1"]
    out = cli([*common, "algorithm=half_step", f"hydra.run.dir={tmp_path / 'plugin_run'}"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    out = cli([*common[:-1], "beta=0.05", "algorithm=fedavg", f"hydra.run.dir={tmp_path / 'fedavg'}"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    plugin = json.loads((tmp_path / "plugin_run" / "metrics.json").read_text())["final"]
    fedavg = json.loads((tmp_path / "fedavg" / "metrics.json").read_text())["final"]
    assert plugin == fedavg  # half of β = 0.1 is FedAvg at 0.05, bit for bit
    out = cli([*common, "algorithm=half_step", "algorithm.shrink=-1"], tmp_path, env)
    assert out.returncode == 2 and "algorithm.shrink=-1.0: must be a positive number" in out.stderr
    out = cli([*common, "algorithm=half_stp"], tmp_path, env)
    assert out.returncode == 2 and "half_step" in out.stderr  # named among the options
    listed = subprocess.run(
        [sys.executable, "-m", "perfedavg.algorithms", "methods"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )
    assert "half_step" in listed.stdout.split()


@pytest.mark.slow
def test_a_plugin_that_cannot_be_loaded_is_named_in_one_line(tmp_path: Path) -> None:
    site = install_plugin(tmp_path, "import no_such_module_here\n")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    out = cli([*SMALL, "num_rounds=1"], tmp_path, env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "perfedavg.algorithms entry point half_step = half_step_plugin:HalfStep: cannot be loaded" in out.stderr
    assert "No module named 'no_such_module_here'" in out.stderr


def test_the_docs_key_table_is_the_declarations() -> None:
    """docs/algorithms.md shows what `python -m perfedavg.algorithms table` prints from the declarations."""
    from perfedavg.algorithms.__main__ import key_table

    text = (ROOT / "docs" / "algorithms.md").read_text()
    shown = text.split("<!-- keys-table:start -->\n", 1)[1].split("\n<!-- keys-table:end -->", 1)[0]
    assert shown == key_table()
