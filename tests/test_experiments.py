"""The paper experiments compose as documented; perfedavg-reproduce runs a sweep through Hydra's joblib launcher and
perfedavg-report summarises it."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from results_text import curvature_medians
from support import cli, run_command

from perfedavg import task
from perfedavg.config import ConfigError, to_container, validate
from perfedavg.data import check_dataset, data_params
from perfedavg.run.runner import compose

ROOT = Path(__file__).resolve().parents[1]
REPRODUCE = [sys.executable, "-m", "perfedavg.analysis.reproduce"]
REPORT = [sys.executable, "-m", "perfedavg.analysis.report"]


@pytest.mark.parametrize(
    ("experiment", "dataset", "in_features", "a"),
    [("paper_mnist", "mnist", 784, 196), ("paper_cifar10", "cifar10", 3072, 68)],
)
def test_paper_experiments_have_the_papers_setting(experiment: str, dataset: str, in_features: int, a: int) -> None:
    cfg = compose([f"experiment={experiment}"])
    validate(cfg)
    c = to_container(cfg)
    assert (c["dataset"]["name"], c["partition"]["name"], c["partition"]["images_per_class"]) == (dataset, "paper", a)
    assert c["num_clients"] == 50 and round(c["fraction"] * c["num_clients"]) == 10
    assert (c["local_steps"], c["batch_size"]) == (10, 40)
    model = task.build_model(c["model"], seed=0)
    widths = [(m.in_features, m.out_features) for m in model.modules() if hasattr(m, "in_features")]
    assert widths == [(in_features, 80), (80, 60), (60, 10)]  # the paper's MLP on this data set's input size
    assert "ELU" in {type(m).__name__ for m in model.modules()}


@pytest.mark.parametrize("experiment", ["paper_digits", "paper_synthetic"])
def test_offline_experiments_compose_and_their_data_fits(experiment: str) -> None:
    cfg = compose([f"experiment={experiment}"])
    validate(cfg)
    c = to_container(cfg)
    check_dataset(data_params(c), c["num_clients"], c["seed"])
    assert c["model"]["name"] == "mlp" and c["local_steps"] == 10 and round(c["fraction"] * c["num_clients"]) == 10


METHOD_OVERRIDES = {
    "fedavg": ["algorithm=fedavg"],
    "fo": ["hessian=fo"],
    "fd": ["hessian=fd"],
    "hvp": ["hessian=hvp"],
    "exact": ["hessian=exact"],
    "pfedme": ["algorithm=pfedme"],
    "ditto": ["algorithm=ditto"],
    "fedavg_ft": ["algorithm=fedavg_ft"],
    "fedavg_matched": ["algorithm=fedavg_matched"],
}


@pytest.mark.slow
def test_every_experiment_composes_with_every_method_it_has_step_sizes_for() -> None:
    """A plain experiment takes every default method of perfedavg-reproduce; a tuned one every method of its
    step-size table, and refuses the others by name (their step sizes were never tuned for it)."""
    for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml")):
        table = (yaml.safe_load(path.read_text()) or {}).get("step_sizes")
        methods = list(table) if table else ["fedavg", "fo", "fd", "hvp"]
        for method in methods:
            validate(compose([f"experiment={path.stem}", *METHOD_OVERRIDES[method]]))
        for method in sorted(set(METHOD_OVERRIDES) - set(methods)) if table else []:
            with pytest.raises(ConfigError, match=f"step_sizes has no entry for method {method}"):
                validate(compose([f"experiment={path.stem}", *METHOD_OVERRIDES[method]]))


@pytest.mark.slow
def test_report_summarises_a_parallel_sweep(tmp_path: Path) -> None:
    """perfedavg-reproduce on a small sweep (joblib, 2 workers, in-process runs, diagnostics for Per-FedAvg), then
    its report: the table must equal the mean ± std of each run's own metrics.json (read independently here)."""
    sweep = tmp_path / "sweep"
    args = [*REPRODUCE, "smoke", "num_rounds=3", "eval_every=1", "--seeds", "0,1", "--methods", "fedavg,fo,hvp"]
    args += ["--diagnostics", "2", "--jobs", "2", "--sweep-dir", str(sweep)]
    out = run_command(args, tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    log = out.stderr + out.stdout
    assert "[reproduce] smoke: 6 runs (2 seeds × 3 methods: fedavg,fo,hvp), 2 at a time" in log
    assert re.search(r"\[perfedavg-fo-seed\d\] round 3/3", log) and re.search(r"\[fedavg-fo-seed\d\] round 3/3", log)
    finished = {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")}
    assert len(finished) == 6  # FedAvg once per seed, not once per Hessian mode
    report = (sweep / "report.md").read_text()
    again = list(args)
    again[again.index("--jobs") + 1] = "1"  # no worker processes to start for runs that are already complete
    out = run_command(again, tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]  # the same sweep again: nothing re-runs, the same report
    assert (out.stdout + out.stderr).count("already complete (3 rounds)") == 6
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("*/metrics.json")} == finished
    assert (sweep / "report.md").read_text() == report
    expected_rows = {"FedAvg": "fedavg-fo", "Per-FedAvg (FO)": "perfedavg-fo", "Per-FedAvg (HF, hvp)": "perfedavg-hvp"}
    for method, prefix in expected_rows.items():
        finals = [json.loads((sweep / f"{prefix}-seed{s}" / "metrics.json").read_text())["final"] for s in (0, 1)]
        cells = []
        for key in ("eval/global_acc", "eval/personalized_acc"):
            values = [f[key] for f in finals]
            cells.append(f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}")
        assert f"| {method} | 2 (0,1) | 3 | 0.05 | 0.02 | {cells[0]} | {cells[1]} |" in report, (method, report)
    from perfedavg import host

    recorded = [json.loads(m.read_text())["host"] for m in sorted(sweep.glob("*/metrics.json"))]
    assert len(recorded) == 6 and all(r == host.describe() for r in recorded)  # every run says where it ran
    assert f"Ran on: {host.label(recorded[0])}: 6 runs." in report

    def personalized(prefix: str, seed: int) -> float:
        metrics = json.loads((sweep / f"{prefix}-seed{seed}" / "metrics.json").read_text())
        return metrics["final"]["eval/personalized_acc"]

    def paired_row(method: str, baseline: str) -> str:
        """The row computed here by hand: mean ± std of the differences, mean ± t(0.975, n−1)·std/√n, and the
        two-sided p of t = mean / (std/√n) — the report takes them from scipy (ttest_1samp on the differences)."""
        from scipy import stats

        diffs = np.array([personalized(method, s) - personalized(baseline, s) for s in (0, 1)])
        mean, std = diffs.mean(), diffs.std(ddof=1)
        cells = f"{mean:.4f} ± {std:.4f} | – | –"
        if std > 0:
            half = stats.t.ppf(0.975, df=1) * std / np.sqrt(2)
            p = 2 * stats.t.sf(abs(mean) / (std / np.sqrt(2)), df=1)
            cells = f"{mean:.4f} ± {std:.4f} | [{mean - half:+.4f}, {mean + half:+.4f}] | {p:.2g}"
        return f"| Per-FedAvg (HF, hvp) | {cells} | {int((diffs > 0).sum())}/2 seeds |"

    row = paired_row("perfedavg-hvp", "fedavg-fo")
    assert row in report, (row, report)
    vs_fo = "vs Per-FedAvg (FO), same seeds | 95 % interval | p (paired t) | ahead on |\n|---|---|---|---|---|\n"
    hf_row = paired_row("perfedavg-hvp", "perfedavg-fo")
    assert vs_fo + hf_row in report, (hf_row, report)  # HF against FO seed by seed: the HF rows only
    # the diagnostics section: the Per-FedAvg runs logged round 2's diagnostics, FedAvg none
    assert "Curvature diagnostics" in report
    assert re.search(r"\| Per-FedAvg \(HF, hvp\) \| 2 \| 1 \| [0-9.e+-]+ \| [0-9.e+-]+ \|", report), report
    assert "| FedAvg | 2 | 1 |" not in report
    for method, cells in curvature_medians(sweep / "curvature.csv").items():  # the table is the CSV's medians
        assert f"| {method} | " + " | ".join(cells) + " |" in report, (method, cells, report)
    assert set(curvature_medians(sweep / "curvature.csv")) == {"Per-FedAvg (FO)", "Per-FedAvg (HF, hvp)"}
    with (sweep / "curvature.csv").open() as f:  # the cost columns: the round's own logged times
        for row in csv.DictReader(f):
            assert 0 < float(row["time/diagnostics_s"]) < float(row["time/client_compute_s"]), row
    for png in ("personalized_acc.png", "global_acc.png", "curvature.png"):
        data = (sweep / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert "(personalized_acc.png)" in report
    # runs.csv: the per-seed numbers behind the tables, exactly the runs' own final values
    rows = list(csv.DictReader((sweep / "runs.csv").open()))
    assert len(rows) == 6 and [r["method"] for r in rows[::2]] == ["FedAvg", "Per-FedAvg (FO)", "Per-FedAvg (HF, hvp)"]
    for row in rows:
        metrics = json.loads((sweep / row["run"] / "metrics.json").read_text())["final"]
        final = metrics["eval/personalized_acc"]
        assert float(row["eval/personalized_acc"]) == pytest.approx(final, rel=1e-6)  # the event files hold float32
        assert (row["seed"], row["alpha"], row["beta"], row["rounds"]) == (row["run"][-1], "0.05", "0.02", "3")
    # --out: the same report as a committed results file, its plots and CSV beside it, under its provenance
    results = tmp_path / "results" / "smoke_sweep.md"
    out = run_command([*REPORT, str(sweep), "--out", str(results)], tmp_path)
    assert out.returncode == 0, out.stderr
    written = results.read_text()
    renamed = report.strip().replace("](", "](smoke_sweep_").replace("[runs.csv]", "[smoke_sweep_runs.csv]")
    renamed = renamed.replace("[curvature.csv]", "[smoke_sweep_curvature.csv]")
    assert written.startswith("<!-- written by: ") and renamed in written
    assert written.splitlines()[1].endswith(f", {host.label(host.describe())} -->")  # the machine that wrote it
    for name in (
        "smoke_sweep_personalized_acc.png",
        "smoke_sweep_curvature.png",
        "smoke_sweep_runs.csv",
        "smoke_sweep_curvature.csv",
    ):
        assert (results.parent / name).stat().st_size > 100
    # --against: a paired table against any method; one the report already compares with (FO) is not repeated
    args = [*REPORT, str(sweep), "--against", "Per-FedAvg (FO)", "--against", "FedAvg"]
    assert run_command(args, tmp_path).returncode == 0
    assert (sweep / "report.md").read_text() == report


def test_report_refuses_a_directory_without_runs(tmp_path: Path) -> None:
    missing = run_command([*REPORT, str(tmp_path / "nope")], tmp_path)
    assert missing.returncode == 2 and "is not a directory" in missing.stderr and "Traceback" not in missing.stderr
    empty = run_command([*REPORT, str(tmp_path)], tmp_path)
    assert empty.returncode == 2 and "no finished runs with TensorBoard event files" in empty.stderr


def test_report_ignores_the_records_a_killed_sweep_left(tmp_path: Path) -> None:
    """A multirun copies its jobs' ``.hydra/`` into ``.hydra-records/`` while it runs; a sweep killed midway leaves
    the copy, which holds configs but no runs: not "runs without metrics"."""
    from perfedavg.analysis import report
    from perfedavg.run.sweep_records import BACKUP

    for job in (tmp_path / "fedavg-fo-seed0", tmp_path / BACKUP / "jobs" / "fedavg-fo-seed0"):
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("seed: 0\n")
    assert report.find_runs(tmp_path) == ([], [tmp_path / "fedavg-fo-seed0"])


def test_reproduce_names_the_experiments_on_a_wrong_one(tmp_path: Path) -> None:
    out = run_command([*REPRODUCE, "paper_mnst"], tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "paper_digits" in out.stderr and "paper_synthetic" in out.stderr and "paper_mnist" in out.stderr


def test_reproduce_refuses_an_unknown_method_before_it_runs_anything(tmp_path: Path) -> None:
    out = run_command([*REPRODUCE, "smoke", "--methods", "fo,hvpp", "--sweep-dir", str(tmp_path / "sweep")], tmp_path)
    assert out.returncode == 2 and not (tmp_path / "sweep").exists()
    assert out.stderr.strip() == (
        "perfedavg-reproduce: error: --methods: unknown method 'hvpp'; allowed: fedavg fedavg_ft fedavg_matched fo "
        "fd hvp exact diag pfedme ditto local"
    )
    out = run_command([*REPRODUCE, "smoke", "--seeds", "0,x", "--sweep-dir", str(tmp_path / "sweep")], tmp_path)
    assert out.returncode == 2 and "--seeds='0,x': give seeds as 0,1,2 or a range 0-4" in out.stderr


def test_paper_mnist_tuned_is_paper_mnist_with_each_methods_tuned_step_sizes() -> None:
    """The generated experiment (perfedavg-tune): the paper's MNIST setting unchanged but for α and β, which are the
    tuned table's entry of the run's method."""
    import yaml

    table = yaml.safe_load((ROOT / "conf" / "experiment" / "paper_mnist_tuned.yaml").read_text())["step_sizes"]
    assert {"fedavg", "fo", "fd", "hvp"} <= set(table)  # perfedavg-reproduce's four default methods
    methods = {"fedavg": ["algorithm=fedavg"], "fo": ["hessian=fo"], "fd": ["hessian=fd"], "hvp": ["hessian=hvp"]}
    for method, overrides in methods.items():
        tuned = compose(["experiment=paper_mnist_tuned", *overrides])
        validate(tuned)
        c = to_container(tuned)
        assert (c["alpha"], c["beta"]) == (table[method]["alpha"], table[method]["beta"]), method
        literal = to_container(compose(["experiment=paper_mnist", *overrides]))
        rest = lambda cfg: {k: v for k, v in cfg.items() if k not in ("alpha", "beta", "step_sizes")}  # noqa: E731
        assert rest(c) == rest(literal), method


@pytest.mark.parametrize("rounds", [[2], [1, 2, 3], [10, 20, 30, 40, 50]], ids=["one-round", "three", "many"])
def test_report_plots_tick_whole_rounds_only(rounds: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from perfedavg.analysis import report

    fig, ax = plt.subplots()
    ax.plot(rounds, np.linspace(0, 1, len(rounds)))
    report.whole_rounds(ax, rounds)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    plt.close(fig)
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


@pytest.mark.slow
def test_a_run_whose_loss_blows_up_says_so_on_the_console_and_in_the_report(tmp_path: Path) -> None:
    """FedAvg at β = 3 on the smoke data: its training loss leaves 100× round 1's at round 2 but stays finite, so the
    run goes on to its end (tuned FedAvg on MNIST's paper split did so silently at round 807 of seed 5). The console
    warns once and the closing line says DIVERGED; the sweep report keeps the run in its table and lists it."""
    from perfedavg.analysis import report

    run_dir = tmp_path / "sweep" / "fedavg-seed0"
    args = ["experiment=smoke", "num_rounds=4", "num_clients=6", "fraction=0.5", "local_steps=2", "eval_every=2"]
    out = cli([*args, "algorithm=fedavg", "beta=3", "backend=inprocess", f"hydra.run.dir={run_dir}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    console = out.stdout + out.stderr
    assert console.count("is diverging") == 1 and "round 2: the training loss" in console and "beta=3.0" in console
    assert "(DIVERGED: the training loss left 100× round 1's at round 2; see the warning above)" in console
    text, _, _ = report.sweep_report(tmp_path / "sweep", tmp_path, "", "## Sweep:")
    whole = "\n".join(text)
    assert "| FedAvg | 1 (0) |" in whole and "(one run) |" in whole  # one run has no spread to show as ± 0
    assert "same seeds" not in whole  # one method: nothing to compare with it, so no empty comparison table
    listed = whole.split("Collapsed on the way (1; in the table):", 1)[1]
    assert "- fedavg-seed0 (FedAvg, seed 0): training loss beyond 100× round 1's at round 2; final" in listed


@pytest.mark.slow
def test_the_report_says_where_the_stability_monitor_warned(tmp_path: Path) -> None:
    """HF (hvp) at α = 0.6 on the smoke data, probed every 2 rounds: the monitor warns at round 2 (its log line);
    FO beside it is probed but never warned about. The report's CSV gives the warning's round per run ("–" where the
    monitor could not warn) and its summary counts the warned runs per method."""
    import csv

    from perfedavg.analysis import report

    args = ["experiment=smoke", "num_rounds=4", "num_clients=6", "fraction=0.5", "local_steps=2", "eval_every=2"]
    for mode in ("hvp", "fo"):
        run_dir = tmp_path / "sweep" / f"{mode}-seed0"
        out = cli(
            [
                *args,
                f"hessian={mode}",
                "alpha=0.6",
                "stability.every=2",
                "backend=inprocess",
                f"hydra.run.dir={run_dir}",
            ],
            tmp_path,
        )
        assert out.returncode == 0, out.stderr[-2000:]
    assert "round 2: α·λ_max > 2 on" in (tmp_path / "sweep" / "hvp-seed0" / "main.log").read_text()
    text, _, _ = report.sweep_report(tmp_path / "sweep", tmp_path, "", "## Sweep:")
    whole = "\n".join(text)
    assert "- Per-FedAvg (HF, hvp): warned in 1 of 1 runs" in whole
    assert "Per-FedAvg (FO): warned" not in whole
    with (tmp_path / "runs.csv").open() as f:
        warned = {row["method"]: row["stability_warning"] for row in csv.DictReader(f)}
    assert warned == {"Per-FedAvg (FO)": "–", "Per-FedAvg (HF, hvp)": "2"}


@pytest.mark.slow
def test_report_names_why_a_run_stopped(tmp_path: Path) -> None:
    """A run that stopped before its last round is listed with the reason its job log gives (Hydra's job log is
    main.log: the report once read cli.log, the name before the CLI became a package, and said "no reason logged")."""
    from perfedavg.analysis import report

    run_dir = tmp_path / "sweep" / "fedavg-fo-seed0"
    args = [sys.executable, "-m", "perfedavg.testing.faults", "raise:0:2", "--", "experiment=smoke", "num_rounds=3"]
    out = run_command([*args, "backend=inprocess", "min_clients=4", f"hydra.run.dir={run_dir}"], tmp_path)
    assert out.returncode == 1, out.stderr[-2000:]
    (run,), _ = report.find_runs(tmp_path / "sweep")
    reason = report.stop_reason(run)
    assert reason.startswith("last logged round 1 of 3; round 2: 1 of 4 sampled clients failed"), reason
