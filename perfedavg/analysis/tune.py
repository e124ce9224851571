"""``perfedavg-tune``: tune each method's step sizes for one experiment on validation data and write the tuned
experiment.

    perfedavg-tune paper_mnist dataset.path=/path/to/mnist
    perfedavg-tune paper_digits --trials 4 --rounds 20            # a quick look, offline

Methods (``--methods``, default ``fedavg fo fd hvp``): any of ``python -m perfedavg.algorithms methods`` (FedAvg,
Per-FedAvg's Hessian modes, pFedMe, Ditto, the FedAvg baselines, Local, installed plugins), each tuned on its own:
at large α the Hessian estimates behave differently (on paper_mnist, with fd's best values hvp diverged at round
13). ``exact`` takes hvp's values (the same product, exactly). A method's study searches its algorithm's declared
search space (``python -m perfedavg.algorithms search METHOD``: α and β log-uniform in [3e-4, 0.3], and e.g. λ for
pFedMe and Ditto, fedavg_ft's adapt_steps), given to the Optuna sweeper as overrides.

Protocol: each client holds out ``--val-fraction`` of its training split (``dataset.val_fraction``) and evaluation
reports on it (``eval_split=val``), so tuning never sees test data; seed 0; in-process runs, ``--jobs`` at a time.

1. Search: one Optuna study per method (hydra-optuna-sweeper, TPE, sampler seed 0; ``conf/hydra/sweeper/
   step_sizes.yaml``): ``--trials`` runs of ``--rounds`` rounds, objective the final personalized validation accuracy
   (the loss, minimized, for regression).
2. Confirm: the best ``--confirm`` trials of each method run again over the experiment's own ``num_rounds``, on
   seeds 0…``--confirm-seeds``−1 (default 3); a candidate is rejected if any of its seeds does not finish (diverges),
   collapses (a round's training loss beyond 100× the first's) or ends at chance level, and the chosen values are
   the stable candidate's with the best mean objective over its seeds: a setting that wins on one seed and diverges
   on another (second-order Per-FedAvg at large α, docs/curvature.md#stability) is not chosen. Once one of a
   candidate's runs stops, collapses or ends at chance level, its seeds not yet started are not run (the report
   marks them "not run"). ``--confirm 0`` skips the stage.

Writes the tuned experiment (``--tuned-config``, default ``<config dir>/experiment/EXPERIMENT_tuned.yaml``: run it as
``perfedavg experiment=EXPERIMENT_tuned``) and the tuning report (``--report``, default
``TUNE_DIR/tune_EXPERIMENT.md``). ``--merge`` keeps the entries of the methods not tuned now from an existing tuned
experiment (e.g. to add ``--methods pfedme ditto``). The overrides after EXPERIMENT that say what is computed
(``partition.alpha=0.1``, not ``dataset.path=…``) are written into the tuned experiment: its step sizes hold for that
setting. Cut off? Run it again with the same ``--tune-dir``: finished studies are kept, an unfinished one (fewer
trials with an outcome than ``--trials``) continues with the trials still missing, its sampler given those run so far
(a run cut off midway is not counted; :mod:`perfedavg.analysis.study_store`), and confirmation runs continue from
their checkpoints.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

from perfedavg import algorithms
from perfedavg.algorithms.declaration import Search
from perfedavg.analysis import launch, study_store, tune_report
from perfedavg.analysis.launch import AnalysisError, Job, say
from perfedavg.errors import exit_on_user_error

TOOL = "tune"
DEFAULT_METHODS = ("fedavg", "fo", "fd", "hvp")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perfedavg-tune", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("experiment", help="conf/experiment/<name>.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run (e.g. dataset.path=…)")
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="space- or comma-separated")
    p.add_argument("--trials", type=int, default=20, help="Optuna trials per method (default 20)")
    p.add_argument("--rounds", type=int, default=300, help="rounds per trial (default 300)")
    p.add_argument("--confirm", type=int, default=3, help="best trials confirmed over num_rounds (default 3; 0: none)")
    p.add_argument(
        "--confirm-seeds", type=int, default=3, help="seeds 0…N−1 each candidate is confirmed on (default 3)"
    )
    p.add_argument("--jobs", type=int, default=launch.default_jobs(), help="runs at a time (default: the CPUs)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="each client's held-out validation share")
    p.add_argument("--tune-dir", type=Path, help="the studies (default multirun/tune-EXPERIMENT)")
    p.add_argument("--tuned-config", type=Path, help="default <config dir>/experiment/EXPERIMENT_tuned.yaml")
    p.add_argument("--report", type=Path, help="default TUNE_DIR/tune_EXPERIMENT.md")
    p.add_argument("--merge", action="store_true", help="keep the other methods' entries of --tuned-config")
    p.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="KEY=LOW:HIGH",
        help="search KEY (alpha, beta, algorithm.lam, …) over [LOW, HIGH] instead of its declared range, e.g. "
        "beta=0.01:3 for an LSTM whose SGD steps are near 1 (repeatable; the scale, log or not, stays)",
    )
    return p


def parse_ranges(given: list[str]) -> dict[str, tuple[float, float]]:
    """``--range KEY=LOW:HIGH`` values → ``{KEY: (LOW, HIGH)}``; refused unless 0 < LOW < HIGH, finite."""
    ranges: dict[str, tuple[float, float]] = {}
    for text in given:
        key, _, bounds = text.partition("=")
        low_text, _, high_text = bounds.partition(":")
        try:
            low, high = float(low_text), float(high_text)
        except ValueError:
            raise AnalysisError(f"--range {text}: expected KEY=LOW:HIGH with two numbers, e.g. beta=0.01:3") from None
        if not key or not (0 < low < high < float("inf")):
            raise AnalysisError(f"--range {text}: needs a key and 0 < LOW < HIGH, e.g. beta=0.01:3")
        ranges[key] = (low, high)
    return ranges


def search_space(method: str, ranges: dict[str, tuple[float, float]]) -> dict[str, Search]:
    """The method's declared search space with the ``--range`` bounds put in (keys it does not search ignored)."""
    space = algorithms.methods()[method][1].search_space()
    return {
        key: replace(s, low=ranges[key][0], high=ranges[key][1]) if key in ranges else s for key, s in space.items()
    }


def check(args: argparse.Namespace) -> None:
    """Every refusal before the first run: numbers in range, the experiment, the methods, the setting and
    ``--merge``'s target."""
    for option, value, low in (("--trials", args.trials, 1), ("--rounds", args.rounds, 1), ("--jobs", args.jobs, 1)):
        if value < low:
            raise AnalysisError(f"{option}={value}: must be an integer ≥ {low}")
    if args.confirm < 0:
        raise AnalysisError(f"--confirm={args.confirm}: must be an integer ≥ 0")
    if args.confirm_seeds < 1:
        raise AnalysisError(f"--confirm-seeds={args.confirm_seeds}: must be an integer ≥ 1")
    if not 0 < args.val_fraction < 1:
        raise AnalysisError(f"--val-fraction={args.val_fraction}: must be in (0, 1)")
    launch.check_experiment(args.experiment)
    args.methods = launch.split_methods(args.methods)
    args.ranges = parse_ranges(args.range)
    searched = {key for method in args.methods for key in search_space(method, {})}
    for key in args.ranges:
        if key not in searched:
            raise AnalysisError(
                f"--range {key}=…: none of the methods {', '.join(args.methods)} searches {key}; they search "
                f"{', '.join(sorted(searched))}"
            )
    try:
        setting = tune_report.settings(args.overrides)
        if args.merge and args.tuned_config.exists():
            tune_report.merge_into(args.tuned_config, args.experiment, setting, {}, "")
    except ValueError as e:
        raise AnalysisError(str(e)) from None


def direction(experiment: str, overrides: list[str]) -> str:
    """Accuracy is maximized; for a regression experiment the objective is the personalized loss, minimized."""
    from perfedavg.run.runner import compose

    return (
        "maximize" if compose([f"experiment={experiment}", *overrides]).dataset.task == "classification" else "minimize"
    )


def validation(val_fraction: float) -> list[str]:
    """What every tuning run shares: evaluation on the held-out validation split, in-process, seed 0."""
    return [f"dataset.val_fraction={val_fraction}", "eval_split=val", "backend=inprocess", "client_cpus=1", "seed=0"]


def search(args: argparse.Namespace, tune_dir: Path) -> None:
    """Stage 1: one Optuna study per method. A finished one is kept; one cut off continues with the trials still
    missing, its sampler seeing those told so far (:mod:`perfedavg.analysis.study_store`)."""
    maximize = direction(args.experiment, args.overrides)
    say(TOOL, f"1/2 search: one study per method ({' '.join(args.methods)})")
    for method in args.methods:
        study = tune_dir / method
        done = study_store.told(study)
        if done >= args.trials:
            say(TOOL, f"{method}: finished study kept ({study})")
            continue
        if not study_store.trial_dirs(study):  # nothing of it ran: a fresh start
            shutil.rmtree(study, ignore_errors=True)
        sweep_dir = study_store.next_launch_dir(study)
        space = [f"{key}={s.sweep()}" for key, s in search_space(method, args.ranges).items()]
        remaining = args.trials - done
        resumed = f" (continued: {done} of {args.trials} done)" if done else ""
        say(TOOL, f"{method}: {remaining} trials × {args.rounds} rounds, {args.jobs} at a time{resumed} → {sweep_dir}")
        code = launch.perfedavg(
            [
                "-m",
                f"experiment={args.experiment}",
                *algorithms.method_overrides(method),
                f"num_rounds={args.rounds}",
                f"eval_every={args.rounds}",
                *validation(args.val_fraction),
                "hydra/sweeper=step_sizes",
                *space,
                f"hydra.sweeper.direction={maximize}",
                f"hydra.sweeper.n_trials={remaining}",
                f"hydra.sweeper.n_jobs={args.jobs}",
                "hydra/launcher=joblib",
                f"hydra.launcher.n_jobs={args.jobs}",
                f"hydra.sweep.dir={sweep_dir}",
                "hydra.sweep.subdir=trial${hydra.job.num}",
                *args.overrides,
            ],
            env=study_store.resume_environment(study, space) if done else None,
        )
        if code != 0:
            raise SystemExit(f"[{TOOL}] {method}: the study stopped (exit {code}); run the same command to continue it")


def confirm(args: argparse.Namespace, tune_dir: Path) -> None:
    """Stage 2: the best ``--confirm`` trials of each study again over the experiment's own ``num_rounds`` (still
    on validation data): step sizes that win over ``--rounds`` rounds can diverge later. Each resumes if cut off."""
    say(TOOL, f"2/2 confirm: the best {args.confirm} trials of each method over the experiment's num_rounds")
    try:
        lines = tune_report.candidates(tune_dir, args.methods, args.confirm)
    except ValueError as e:
        raise SystemExit(f"[{TOOL}] {e}") from None
    jobs, run_dirs = [], {}
    for line in lines:
        method, trial, *chosen = line.split()
        say(TOOL, f"{method}: confirming {' '.join(chosen)} on seeds 0–{args.confirm_seeds - 1}")
        for seed in range(args.confirm_seeds):
            run_dir = tune_dir / method / f"confirm-{trial}-seed{seed}"
            overrides = [f"experiment={args.experiment}", *algorithms.method_overrides(method), *chosen]
            overrides += [*validation(args.val_fraction), f"seed={seed}", "resume=auto", f"hydra.run.dir={run_dir}"]
            label = f"{method}: confirm-{trial} seed {seed}"
            jobs.append(Job(label, [*overrides, *args.overrides], Path(f"{run_dir}.log"), f"{method} {trial}"))
            run_dirs[label] = run_dir

    def judge(job: Job) -> str | None:  # a finished run that collapsed or ended at chance level
        run_dir = run_dirs[job.label]
        if not (run_dir / "metrics.json").exists():
            return None
        return tune_report.instability(run_dir, json.loads((run_dir / "metrics.json").read_text()))

    # A run that stops, collapses or ends at chance level rejects its trial, so its seeds not yet started are not run.
    launch.run_parallel(TOOL, jobs, args.jobs, drop_group=True, judge=judge)
    say(TOOL, "confirmation done")


def command_line(args: argparse.Namespace) -> str:
    """The tuning as one command with every budget value spelled out (recorded in the tuned experiment)."""
    words = ["perfedavg-tune", args.experiment, *args.overrides, "--methods", *args.methods]
    words += ["--trials", str(args.trials), "--rounds", str(args.rounds), "--confirm", str(args.confirm)]
    words += ["--confirm-seeds", str(args.confirm_seeds)]
    words += ["--val-fraction", f"{args.val_fraction:g}"]
    words += [f"--range={key}={low:g}:{high:g}" for key, (low, high) in args.ranges.items()]
    return shlex.join(words)


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("perfedavg-tune"):
        args = parser().parse_intermixed_args(argv)
        tune_dir = args.tune_dir or Path("multirun") / f"tune-{args.experiment}"
        args.tuned_config = args.tuned_config or tune_report.default_config_out(args.experiment)
        check(args)
        start = time.monotonic()
        search(args, tune_dir)
        say(TOOL, f"studies done in {time.monotonic() - start:.0f} s")
        if args.confirm > 0:
            confirm(args, tune_dir)
        say(TOOL, f"all done in {time.monotonic() - start:.0f} s")
        report = args.report or tune_dir / f"tune_{args.experiment}.md"
        try:
            tune_report.write(
                tune_dir,
                args.experiment,
                args.methods,
                args.tuned_config,
                report,
                command_line(args),
                args.overrides,
                args.merge,
            )
        except ValueError as e:
            raise SystemExit(f"[{TOOL}] {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
