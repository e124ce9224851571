#!/usr/bin/env python
"""Where an in-process federation's time goes: cProfile of a whole run, grouped the way the issue reports it.

    .venv/bin/python scripts/profile_federation.py experiment=paper_mnist dataset.path=../shared/data/mnist \
        num_rounds=10 eval_every=10 hessian=fd [--out=scripts/results/profile_paper_mnist.md]

Runs the configuration with ``backend=inprocess inprocess_workers=1`` (clients one after another in the main
thread, where cProfile sees them; 1 torch thread as a simulated client has), then prints the wall time split into:
start-up (validation, data checks), data (loading, decoding, partitioning, building client tensors), local math
(``algorithm.local_update`` and ``personalized_evaluation``), and the rest of the per-message path (message
encoding, config parsing, model lookup, aggregation, logging), followed by the top functions by cumulative and by
own time.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

from perfedavg.run.runner import compose, prepare, run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perfedavg.analysis.results_file import recording  # noqa: E402

#: (label, substring of "file:function" identifying the frame whose cumulative time counts for it)
GROUPS = [
    ("data: load, decode, partition, client tensors", ("perfedavg/data/registry.py:load_client",)),
    ("local math: local updates", ("algorithms/per_fedavg.py:local_update", "algorithms/fedavg.py:local_update")),
    ("local math: personalized evaluation", ("perfedavg/algorithms/base.py:personalized_evaluation",)),
    ("server: aggregate", ("perfedavg/federation/loop.py:aggregate",)),
    ("server: TensorBoard, checkpoint", ("perfedavg/federation/tracking.py:scalars", "perfedavg/checkpoint.py:save")),
]


def cumulative(stats: pstats.Stats, needle: str) -> float:
    total = 0.0
    for (path, _, func), (_, _, _, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
        if f"{path}:{func}".endswith(needle):
            total += ct
    return total


def main() -> None:
    out = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--out=")), None)
    with recording(out):
        profile([a for a in sys.argv[1:] if not a.startswith("--out=")])


def profile(user_overrides: list[str]) -> None:
    overrides = [*user_overrides, "backend=inprocess", "client_cpus=1", "inprocess_workers=1"]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    cfg = prepare(compose(overrides))
    startup = time.perf_counter() - t0
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        profiler.enable()
        summary = run(cfg, Path(tmp))
        profiler.disable()
        wall = time.perf_counter() - t1
    stats = pstats.Stats(profiler)
    rounds = summary["rounds"]
    train_rounds = [r["time/round_s"] for r in rounds if "eval/global_loss" not in r]
    eval_rounds = [r["time/round_s"] for r in rounds if "eval/global_loss" in r]
    print(f"Profile of `{' '.join(user_overrides)}` in-process: {len(rounds)} rounds\n")
    print("| part | seconds | share |")
    print("|---|---:|---:|")
    print(f"| start-up: prepare() (validation, data check) | {startup:.2f} | |")
    print(f"| the federation (run(), profiled) | {wall:.2f} | 100% |")
    accounted = 0.0
    for label, needles in GROUPS:
        seconds = sum(cumulative(stats, n) for n in needles)
        accounted += seconds
        print(f"| {label} | {seconds:.2f} | {100 * seconds / wall:.0f}% |")
    rest = wall - accounted
    print(f"| everything else (messages, config, models, loop) | {rest:.2f} | {100 * rest / wall:.0f}% |")
    if train_rounds:
        print(f"\nmedian training-only round: {sorted(train_rounds)[len(train_rounds) // 2]:.3f} s", end="")
    if eval_rounds:
        print(f"; median round with evaluation: {sorted(eval_rounds)[len(eval_rounds) // 2]:.3f} s", end="")
    print("\n")
    for order in ("cumulative", "tottime"):
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats(order).print_stats(15)
        lines = buffer.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip().startswith("ncalls"))
        print(f"Top 15 by {order} time:\n```")
        print("\n".join(lines[start : start + 16]))
        print("```\n")


if __name__ == "__main__":
    main()
