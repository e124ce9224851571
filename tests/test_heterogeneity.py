"""Comparisons across settings: a tuned experiment carries the setting it was tuned for
(perfedavg.analysis.tune_report), methods tuned at different times merge into one tuned experiment, and
perfedavg-heterogeneity tunes and runs each level of heterogeneity and reports them side by side
(perfedavg-heterogeneity-report)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from support import run_command

from perfedavg.analysis import heterogeneity_report as hr
from perfedavg.analysis import report, tune_report
from perfedavg.config import preparation
from perfedavg.run import runner
from perfedavg.run.runner import compose, prepare

HETEROGENEITY = [sys.executable, "-m", "perfedavg.analysis.heterogeneity"]
HETEROGENEITY_REPORT = [sys.executable, "-m", "perfedavg.analysis.heterogeneity_report"]


def test_a_tuned_experiment_keeps_the_setting_it_was_tuned_for_and_not_where_it_ran() -> None:
    given = ["partition.alpha=0.1", "dataset.path=/data/mnist", "backend=ray", "hydra.verbose=true", "partition=iid"]
    assert tune_report.settings(given) == {"partition.alpha": "0.1", "partition": "iid"}
    for bad, why in (("alpha=0.1", "chosen per method"), ("+extra=1", "key=value"), ("num_rounds", "key=value")):
        with pytest.raises(ValueError, match=why):
            tune_report.settings([bad])


def test_the_setting_reaches_the_composed_tuned_experiment(tmp_path: Path, monkeypatch) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(runner.CONF_DIR, conf)
    table = {"fo": {"alpha": 0.01, "beta": 0.02}, "fedavg": {"alpha": 0.03, "beta": 0.04}}
    setting = tune_report.settings(["partition=dirichlet", "partition.alpha=0.1", "num_clients=6"])
    text = tune_report.tuned_yaml("smoke", table, "cmd", setting)
    (conf / "experiment" / "smoke_alpha0.1_tuned.yaml").write_text(text)
    assert "# Setting the step sizes were tuned for: partition=dirichlet, partition.alpha=0.1, num_clients=6." in text
    monkeypatch.setattr(preparation, "CONF_DIR", conf)
    c = prepare(compose(["experiment=smoke_alpha0.1_tuned", "hessian=fo"]))
    assert (c["partition"]["name"], c["partition"]["alpha"], c["num_clients"]) == ("dirichlet", 0.1, 6)
    assert (c["alpha"], c["beta"]) == (0.01, 0.02)
    plain = prepare(compose(["experiment=smoke", "hessian=fo"]))
    assert plain["partition"]["alpha"] != 0.1 and plain["num_clients"] != 6  # the level came from the tuned file


def test_methods_tuned_later_merge_into_the_tuned_experiment(tmp_path: Path) -> None:
    first = {"fedavg": {"alpha": 0.1, "beta": 0.2}, "hvp": {"alpha": 0.3, "beta": 0.4}}
    first = tune_report.chosen_table({m: _trial(v) for m, v in first.items()})
    assert first["exact"] == first["hvp"]
    existing = tmp_path / "paper_tuned.yaml"
    existing.write_text(tune_report.tuned_yaml("paper", first, "first command", report_name="tune_paper.md"))
    later = tune_report.chosen_table({"ditto": _trial({"alpha": 0.5, "beta": 0.6}, lam=0.7), "hvp": _trial({})})
    table, commands, earlier = tune_report.merge_into(existing, "paper", {}, later, "(ditto, hvp) second command")
    assert table["fedavg"] == {"alpha": 0.1, "beta": 0.2}  # kept
    assert table["ditto"] == {"alpha": 0.5, "beta": 0.6, "lam": 0.7}  # added
    assert table["hvp"] == table["exact"] == {"alpha": 0.01, "beta": 0.02}  # replaced; exact follows hvp
    assert commands == ["first command", "(ditto, hvp) second command"] and earlier == "tune_paper.md"
    with pytest.raises(ValueError, match="tuned for another setting"):
        tune_report.merge_into(existing, "paper", {"partition.alpha": "0.1"}, later, "x")
    with pytest.raises(ValueError, match="is not a tuned other"):
        tune_report.merge_into(existing, "other", {}, later, "x")


def _trial(values: dict[str, float], lam: float | None = None) -> tune_report.Trial:
    searched = {"alpha": values.get("alpha", 0.01), "beta": values.get("beta", 0.02)}
    searched |= {"algorithm.lam": lam} if lam is not None else {}
    return tune_report.Trial(0, 0.5, True, 1.0, {}, searched)


def _resolved(config: Path) -> dict:
    """A run's saved config with its interpolations (``${per_method:alpha}``) resolved."""
    from omegaconf import OmegaConf

    from perfedavg.config import register_schema

    register_schema()
    return OmegaConf.to_container(OmegaConf.load(config), resolve=True)


def test_perfedavg_heterogeneity_refuses_a_level_that_is_not_a_number(tmp_path: Path) -> None:
    out = run_command([*HETEROGENEITY, "smoke", "10,iid"], tmp_path)
    assert out.returncode == 2 and "'iid' is not a number" in out.stderr and "Traceback" not in out.stderr
    out = run_command([*HETEROGENEITY, "smoke"], tmp_path)
    assert out.returncode == 2 and "usage:" in out.stderr
    assert not (tmp_path / "multirun").exists()


@pytest.mark.slow
def test_perfedavg_heterogeneity_tunes_and_runs_each_level_and_reports_them_side_by_side(tmp_path: Path) -> None:
    """Two levels of Dirichlet heterogeneity on the offline smoke setting: each level gets its own tuned experiment
    carrying that level, its test runs run at that level with its step sizes, and the report's numbers are the
    runs' own final values (FedAvg's mean ± std, the paired difference)."""
    conf = tmp_path / "conf"
    shutil.copytree(runner.CONF_DIR, conf)
    out_dir = tmp_path / "out"
    args = [*HETEROGENEITY, "smoke", "10,0.1", "num_clients=6", "--out-dir", str(out_dir)]
    args += ["--tune-reports", str(tmp_path / "reports"), "--trials", "2", "--rounds", "2", "--confirm", "0"]
    args += ["--seeds", "0,1", "--methods", "fedavg", "fo", "--jobs", "1"]  # runs in parallel: test_experiments
    out = run_command(args, tmp_path, {"PERFEDAVG_CONF_DIR": str(conf)}, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    finals: dict[tuple[float, str], dict[int, float]] = {}
    for level in (10.0, 0.1):
        tag = f"alpha{level:g}"
        tuned = yaml.safe_load((conf / "experiment" / f"smoke_{tag}_tuned.yaml").read_text())
        assert tuned["partition"]["alpha"] == level and tuned["num_clients"] == 6
        assert set(tuned["step_sizes"]) == {"fedavg", "fo"}
        assert (tmp_path / "reports" / f"tune_smoke_{tag}.md").exists()
        runs = sorted((out_dir / tag / "runs").glob("*/metrics.json"))
        assert len(runs) == 4  # 2 methods × 2 seeds
        for metrics in runs:
            saved = _resolved(metrics.parent / ".hydra" / "config.yaml")
            assert saved["partition"]["alpha"] == level and saved["eval_split"] == "test"
            method = "fedavg" if saved["algorithm"]["name"] == "fedavg" else "fo"
            step = tuned["step_sizes"][method]
            assert (float(f"{saved['alpha']:.3g}"), float(f"{saved['beta']:.3g}")) == (step["alpha"], step["beta"])
            final = json.loads(metrics.read_text())["final"]["eval/personalized_acc"]
            finals.setdefault((level, method), {})[saved["seed"]] = final
    text = (out_dir / "report.md").read_text()
    assert (out_dir / "heterogeneity.png").stat().st_size > 10_000
    top_share = {}
    for level in (10.0, 0.1):
        fedavg = list(finals[(level, "fedavg")].values())
        mean_std = f"{np.mean(fedavg):.4f} ± {np.std(fedavg, ddof=1):.4f}"
        diff = np.mean([finals[(level, "fo")][s] - finals[(level, "fedavg")][s] for s in (0, 1)])
        row = next(line for line in text.splitlines() if line.startswith(f"| digits | {level:g} |"))
        assert f"| {mean_std} | {diff:+.4f} [" in row, row
        top_share[level] = float(row.split(" | ")[2].split(" / ")[0])
    assert 0.1 <= top_share[10.0] < top_share[0.1] <= 1.0  # digits has 10 labels; α_D = 0.1 skews them most
    # the report alone, again: the same table
    again = run_command([*HETEROGENEITY_REPORT, str(out_dir)], tmp_path)
    assert again.returncode == 0 and again.stdout.split("| digits | 10 |")[1].split("\n")[0] in text


def test_heterogeneity_report_refuses_a_directory_without_runs(tmp_path: Path) -> None:
    out = run_command([*HETEROGENEITY_REPORT, str(tmp_path / "nope")], tmp_path)
    assert out.returncode == 2 and "not a directory" in out.stderr and "Traceback" not in out.stderr
    out = run_command([*HETEROGENEITY_REPORT, str(tmp_path)], tmp_path)
    assert out.returncode == 2 and "no finished test runs" in out.stderr and "Traceback" not in out.stderr


def _fake_run(method: str, seed: int, final: float, level: float = 0.1) -> report.Run:
    config = {"dataset": {"name": "digits", "num_classes": 10}, "partition": {"alpha": level}, "num_rounds": 3}
    config |= {"algorithm": {"name": "fedavg"}, "alpha": 0.05, "beta": 0.1, "adapt_steps": 1}
    rounds = np.array([1.0, 2.0, 3.0])
    curves = {"eval/personalized_acc": (rounds, np.array([0.5, 0.6, final])), "eval/global_acc": (rounds, rounds / 4)}
    return report.Run(Path(f"{method}-seed{seed}"), method, seed, config, curves)


def test_runs_that_end_at_chance_level_are_named_kept_in_the_table_and_left_out_of_the_figure(tmp_path: Path) -> None:
    """A run can diverge with finite values (loss 1e17, accuracy 0.10): the federation does not stop it, so the report
    must say so. It stays in the table's numbers (it is the method's outcome on that seed) and is left out of the
    figure's point, which says how many seeds it left out."""
    cell = hr.Cell("digits", 0.1)
    finals = {"FedAvg": [0.90, 0.91, 0.92], "Per-FedAvg (FO)": [0.92, 0.93, 0.94], hr.HF: [0.95, 0.10, 0.96]}
    for method, values in finals.items():
        cell.runs[method] = [_fake_run(method, seed, v) for seed, v in enumerate(values)]
    assert [(r.method, r.seed) for r in cell.collapsed] == [(hr.HF, 1)]
    assert not hr.is_collapsed(_fake_run("FedAvg", 0, 0.151)) and hr.is_collapsed(_fake_run("FedAvg", 0, 0.15))
    table = hr.summary_table([cell], "partition.alpha")
    assert table.splitlines()[-1].endswith("| Per-FedAvg (HF, hvp) seed 1 collapsed |")
    assert hr.difference(cell, hr.HF, hr.FO).values == pytest.approx([0.03, -0.83, 0.02])
    assert hr.difference(cell, hr.HF, hr.FO, stable_only=True).values == pytest.approx([0.03, 0.02])
    assert "Finished at chance level" in hr.cell_section(cell, "partition.alpha")
    hr.plot([cell], "partition.alpha", tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 10_000
