"""``perfedavg-heterogeneity``: how the comparison of methods changes with the degree of heterogeneity.

    perfedavg-heterogeneity dirichlet_mnist 10,0.3,0.1 dataset.path=/path/to/mnist
    perfedavg-heterogeneity smoke 10,0.1 partition=dirichlet --trials 4 --rounds 5 --confirm 0 --seeds 0,1  # a look

For each level L of one key (``--key``, default ``partition.alpha``: the Dirichlet concentration α_D of the users'
label mixes) it tunes every method's step sizes on validation data for that level (``perfedavg-tune``), runs the
tuned methods over several seeds on test data (``perfedavg-reproduce``), then writes one table and figure across the
levels (``perfedavg-heterogeneity-report``).

Per level (TAG = the key's last part and the level; ``partition.alpha=0.1``: ``alpha0.1``):

- tuning: ``OUT_DIR/TAG/tune``, the tuned experiment ``<config dir>/experiment/EXPERIMENT_TAG_tuned.yaml`` (it
  carries KEY=L: its step sizes hold at that level) and the tuning report ``TUNE_REPORTS/tune_EXPERIMENT_TAG.md``;
- test runs: ``OUT_DIR/TAG/runs``, with their report.md and plots.

Then ``OUT_DIR/report.md`` and ``OUT_DIR/heterogeneity.png`` over all levels (for several data sets at once:
``perfedavg-heterogeneity-report OUT_DIR_1 OUT_DIR_2 --out …``). The extra overrides go to every tuning and test
run. Cut off? Run the same command again: finished studies and runs are kept, interrupted ones continue. A test run
that stops (diverges) does not stop the others; the report lists it and the command exits 1 at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from perfedavg.analysis import heterogeneity_report, launch, reproduce, tune, tune_report
from perfedavg.analysis.launch import AnalysisError, say
from perfedavg.errors import exit_on_user_error

TOOL = "heterogeneity"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perfedavg-heterogeneity",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", help="conf/experiment/<name>.yaml")
    p.add_argument("levels", help="the key's values, comma-separated (e.g. 10,0.3,0.1)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every tuning and test run")
    p.add_argument("--key", default="partition.alpha", help="the config key whose value is the level")
    p.add_argument("--methods", nargs="+", default=["fedavg,fo,hvp"], help="space- or comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="the test runs' seeds (default 0,1,2)")
    p.add_argument("--out-dir", type=Path, help="default multirun/heterogeneity-EXPERIMENT")
    p.add_argument("--tune-reports", type=Path, help="the tuning reports (default OUT_DIR/tune-reports)")
    p.add_argument("--trials", type=int, default=10, help="Optuna trials per level and method (default 10)")
    p.add_argument("--rounds", type=int, default=100, help="rounds per trial (default 100)")
    p.add_argument("--confirm", type=int, default=2, help="best trials confirmed (default 2)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--jobs", type=int, default=launch.default_jobs(), help="runs at a time (default: the CPUs)")
    return p


def levels_of(text: str, key: str) -> list[str]:
    """The levels as given (``10,0.3``), each checked to be a number."""
    levels = [v for v in text.split(",") if v]
    for level in levels:
        try:
            float(level)
        except ValueError:
            raise AnalysisError(f"LEVELS={text}: {level!r} is not a number ({key} takes one value per level)") from None
    if not levels:
        raise AnalysisError(f"LEVELS={text!r}: give at least one level")
    return levels


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("perfedavg-heterogeneity"):
        args = parser().parse_intermixed_args(argv)
        launch.check_experiment(args.experiment)
        levels = levels_of(args.levels, args.key)
        methods = launch.split_methods(args.methods)
        reproduce.seeds_of(args.seeds)
        out_dir = args.out_dir or Path("multirun") / f"heterogeneity-{args.experiment}"
        reports = args.tune_reports or out_dir / "tune-reports"
        out_dir.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        failed = False
        for i, level in enumerate(levels, 1):
            tag = f"{args.key.rsplit('.', 1)[-1]}{level}"
            tuned = f"{args.experiment}_{tag}_tuned"
            elapsed = (time.monotonic() - start) / 60
            say(TOOL, f"level {i}/{len(levels)}: {args.key}={level} | {elapsed:.0f}m elapsed")
            setting = [f"{args.key}={level}", *args.overrides]
            budget = ["--trials", str(args.trials), "--rounds", str(args.rounds), "--confirm", str(args.confirm)]
            budget += ["--val-fraction", str(args.val_fraction), "--jobs", str(args.jobs)]
            tune.main(
                [
                    args.experiment,
                    *setting,
                    "--methods",
                    *methods,
                    *budget,
                    "--tune-dir",
                    str(out_dir / tag / "tune"),
                    "--tuned-config",
                    str(tune_report.default_config_out(f"{args.experiment}_{tag}")),
                    "--report",
                    str(reports / f"tune_{args.experiment}_{tag}.md"),
                ]
            )
            code = reproduce.main(
                [
                    tuned,
                    *args.overrides,
                    "--methods",
                    ",".join(methods),
                    "--seeds",
                    args.seeds,
                    "--jobs",
                    str(args.jobs),
                    "--sweep-dir",
                    str(out_dir / tag / "runs"),
                ]
            )
            failed = failed or code != 0
        say(TOOL, f"all levels done in {(time.monotonic() - start) / 60:.0f} min; writing the report")
        written = heterogeneity_report.main(
            [
                str(out_dir),
                "--key",
                args.key,
                "--out",
                str(out_dir / "report.md"),
                "--figure",
                str(out_dir / "heterogeneity.png"),
            ]
        )
        if failed or written != 0:
            say(TOOL, f"some test runs stopped (see the per-level reports under {out_dir})")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
