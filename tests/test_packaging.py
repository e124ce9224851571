"""A wheel is a complete install: built from the checkout, installed without ``-e`` into a temporary target, it runs
``experiment=smoke`` from a directory outside the repository (its configs ship inside the package), and its analysis
commands (``perfedavg-reproduce``, ``perfedavg-tune``, ``perfedavg-report``, ``perfedavg-plot``) tune, reproduce and
report there too."""

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
        timeout=600,
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


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the install target, an empty working directory outside the checkout, the environment that imports the
    install ahead of the editable one)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        timeout=600,
        capture_output=True,
    )
    work = tmp_path_factory.mktemp("elsewhere")
    env = {k: v for k, v in os.environ.items() if k != "PERFEDAVG_CONF_DIR"}
    env["PYTHONPATH"] = str(target)  # ahead of the editable install's finder
    return target, work, env


@pytest.mark.slow
def test_a_non_editable_install_runs_the_smoke_experiment_outside_the_checkout(installed) -> None:
    target, work, env = installed
    where = subprocess.run(
        [sys.executable, "-c", "import perfedavg.config.preparation as p; print(p.__file__); print(p.CONF_DIR)"],
        check=True,
        timeout=600,
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


@pytest.mark.slow
def test_the_installed_analysis_commands_reproduce_tune_report_and_plot_outside_the_checkout(installed) -> None:
    """The console scripts the wheel installs (``bin/perfedavg-…``) work where there is no checkout: a one-seed
    reproduction with its report, a one-trial tuning that writes the tuned experiment, and a plot of one run."""
    target, work, env = installed

    def command(name: str, *args: str) -> subprocess.CompletedProcess:
        script = target / "bin" / name
        assert script.is_file(), f"the wheel installs no {name}"
        return subprocess.run(
            [sys.executable, str(script), *args], capture_output=True, text=True, cwd=work, env=env, timeout=600
        )

    done = command(
        "perfedavg-reproduce",
        "smoke",
        "num_rounds=2",
        "--seeds",
        "0",
        "--methods",
        "fo",
        "--jobs",
        "1",
        "--sweep-dir",
        "sweep",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = (work / "sweep" / "report.md").read_text()
    assert "| Per-FedAvg (FO) | 1 (0) | 2 |" in report, report
    (run_dir,) = (work / "sweep").glob("perfedavg-fo-seed0")
    done = command("perfedavg-plot", str(run_dir), "run.png")
    assert done.returncode == 0 and (work / "run.png").read_bytes()[:4] == b"\x89PNG", done.stderr
    done = command(
        "perfedavg-tune",
        "smoke",
        "--methods",
        "fo",
        "--trials",
        "1",
        "--rounds",
        "1",
        "--confirm",
        "0",
        "--jobs",
        "1",
        "--tuned-config",
        "smoke_tuned.yaml",
        "--tune-dir",
        "tune",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "step_sizes:\n  fo: {alpha: " in (work / "smoke_tuned.yaml").read_text()
    assert "written by: " in (work / "tune" / "tune_smoke.md").read_text()
    assert "perfedavg 0.1.0 (installed)" in (work / "tune" / "tune_smoke.md").read_text()  # no checkout to name
