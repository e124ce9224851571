"""``perfedavg-reproduce``: run a comparison of methods over seeds for one experiment, then its report.

    perfedavg-reproduce paper_digits                                  # offline
    perfedavg-reproduce paper_mnist_tuned dataset.path=/path/to/mnist --methods fo,hvp --seeds 0-9
    perfedavg-reproduce paper_synthetic num_rounds=50                 # extra Hydra overrides go to every run

Methods (``--methods``, default ``fedavg,fo,fd,hvp``: FedAvg, Per-FedAvg FO, HF with the paper's finite difference and
with an exact Hessian-vector product): any of ``python -m perfedavg.algorithms methods`` (pFedMe, Ditto, fedavg_ft,
fedavg_matched, Local, installed plugins; docs/algorithms.md). An algorithm that ignores the Hessian mode runs once
per seed, not once per mode (its runs would repeat bit for bit).

Runs go in parallel through Hydra's joblib launcher (``--jobs`` worker processes, default the CPUs), each with
``backend=inprocess``: one process per run and no Ray, so parallel runs cannot collide (tests/test_federation.py
checks in-process == Ray metric for metric). ``--backend ray`` runs each through Flower's Ray engine instead, each
with its own Ray instance (give them jobs × client_cpus ≤ CPUs). ``--diagnostics N`` makes the runs of algorithms
that read it log curvature diagnostics every N rounds (``diagnostics.every=N``; results unchanged).

The sweep goes to ``--sweep-dir`` (default ``multirun/EXPERIMENT-<time>``), one run per
``<algorithm>-<mode>-seed<seed>``, and its report (``perfedavg-report``) to ``SWEEP_DIR/report.md``. A run that stops
(e.g. diverges) does not stop the others: the report lists it as skipped and the command exits 1 at the end.
Cut off? Run the same command with ``--sweep-dir`` of the sweep: every run has ``resume=auto``, so finished runs are
kept and interrupted ones continue from their last checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from perfedavg import algorithms
from perfedavg.analysis import launch, report
from perfedavg.analysis.launch import AnalysisError, say
from perfedavg.errors import exit_on_user_error

TOOL = "reproduce"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="perfedavg-reproduce",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", help="conf/experiment/<name>.yaml")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run (e.g. dataset.path=…)")
    p.add_argument("--methods", nargs="+", default=["fedavg,fo,fd,hvp"], help="space- or comma-separated")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated, or a range FIRST-LAST (default 0,1,2,3,4)")
    p.add_argument("--jobs", type=int, default=launch.default_jobs(), help="runs at a time (default: the CPUs)")
    p.add_argument("--backend", choices=("inprocess", "ray"), default="inprocess")
    p.add_argument("--diagnostics", type=int, default=0, help="N > 0: curvature diagnostics every N rounds")
    p.add_argument("--sweep-dir", type=Path, help="default multirun/EXPERIMENT-<time>")
    return p


def seeds_of(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` as a list of seeds; :class:`AnalysisError` for anything else."""
    try:
        if "-" in text and "," not in text:
            first, last = (int(x) for x in text.split("-"))
            seeds = list(range(first, last + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise AnalysisError(f"--seeds={text!r}: give seeds as 0,1,2 or a range 0-4") from None
    if not seeds or min(seeds) < 0:
        raise AnalysisError(f"--seeds={text!r}: give at least one seed, each ≥ 0")
    return seeds


def modes_by_algorithm(methods: list[str]) -> dict[str, list[str]]:
    """``{algorithm: its Hessian modes to run}``, in the order of ``methods`` (``fo`` for one that reads none)."""
    grouped: dict[str, list[str]] = {}
    for method in methods:
        algorithm, mode = (o.split("=", 1)[1] for o in algorithms.method_overrides(method))
        grouped.setdefault(algorithm, []).append(mode)
    return grouped


def main(argv: list[str] | None = None) -> int:
    with exit_on_user_error("perfedavg-reproduce"):
        args = parser().parse_intermixed_args(argv)
        launch.check_experiment(args.experiment)
        methods = launch.split_methods(args.methods)
        seeds = seeds_of(args.seeds)
        if args.jobs < 1 or args.diagnostics < 0:
            raise AnalysisError(f"--jobs={args.jobs}, --diagnostics={args.diagnostics}: need jobs ≥ 1, diagnostics ≥ 0")
        sweep_dir = args.sweep_dir or Path("multirun") / f"{args.experiment}-{time.strftime('%Y%m%d-%H%M%S')}"
        common = [
            f"experiment={args.experiment}",
            "seed=" + ",".join(map(str, seeds)),
            f"backend={args.backend}",
            "client_cpus=1",
            "resume=auto",
            "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={args.jobs}",
            "hydra.launcher.verbose=10",
            f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweep.subdir=${algorithm.name}-${hessian.mode}-seed${seed}",
        ]
        start = time.monotonic()
        say(
            TOOL,
            f"{args.experiment}: {len(methods) * len(seeds)} runs ({len(seeds)} seeds × {len(methods)} methods: "
            f"{','.join(methods)}), {args.jobs} at a time → {sweep_dir}",
        )
        failed = False  # a run that stops fails its multirun after the others finish; the sweep goes on
        for algorithm, modes in modes_by_algorithm(methods).items():
            say(TOOL, f"{algorithm} with hessian={','.join(modes)}")
            diagnose = []
            if args.diagnostics and "diagnostics.every" in algorithms.reads(algorithm):
                diagnose = [f"diagnostics.every={args.diagnostics}"]
            code = launch.perfedavg(
                ["-m", *common, f"algorithm={algorithm}", f"hessian={','.join(modes)}", *diagnose, *args.overrides]
            )
            failed = failed or code != 0
        say(TOOL, f"all runs done in {time.monotonic() - start:.0f} s; writing the report")
        written = report.main([str(sweep_dir)])
        if failed or written != 0:
            say(TOOL, "some runs failed (see their log lines above and report.md's skipped runs)")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
