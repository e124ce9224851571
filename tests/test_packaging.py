"""A wheel is a complete install: built from the checkout, installed without ``-e`` into a temporary target, it runs
``experiment=smoke`` from a directory outside the repository (its configs ship inside the package)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel .`` of the checkout (no dependencies, no build isolation: offline, setuptools from the dev extra)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        cwd=out,
    )
    (found,) = out.glob("perfedavg-*.whl")
    return found


def test_the_wheel_holds_every_package_and_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    source_modules = {str(p.relative_to(ROOT)) for p in (ROOT / "perfedavg").rglob("*.py")}
    configs = {"perfedavg/" + str(p.relative_to(ROOT)) for p in (ROOT / "conf").rglob("*.yaml")}
    assert source_modules - names == set(), "modules missing from the wheel: list their package in pyproject.toml"
    assert configs - names == set(), "configs missing from the wheel"
    assert "perfedavg/conf/config.yaml" in configs


@pytest.mark.slow
def test_a_non_editable_install_runs_the_smoke_experiment_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PERFEDAVG_CONF_DIR"}
    env["PYTHONPATH"] = str(target)  # ahead of the editable install's finder
    where = subprocess.run(
        [sys.executable, "-c", "import perfedavg.config.preparation as p; print(p.__file__); print(p.CONF_DIR)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    ).stdout.split()
    assert where == [str(target / "perfedavg" / "config" / "preparation.py"), str(target / "perfedavg" / "conf")]
    done = subprocess.run(
        [sys.executable, "-m", "perfedavg", "experiment=smoke", "backend=inprocess"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 3/3" in done.stderr + done.stdout
    assert list((work / "outputs").rglob("metrics.json")), "the run wrote no metrics.json under the new directory"
