#!/usr/bin/env python
"""How close the stability monitor's fixed-step Lanczos gets to λ_max, and what it costs: for the checkpointed model
of each RUN_DIR and its first clients' probe minibatches, λ_max to tol 1e-8 (ARPACK) against 5, 10, 20 and 40
Lanczos steps (perfedavg.curvature.spectrum.lanczos_top_eigenvalue). Prints a Markdown table.

    .venv/bin/python scripts/bench_lanczos.py RUN_DIR [RUN_DIR …] [--clients 5]

A RUN_DIR is any perfedavg run directory with a checkpoint (e.g. the stability check's runs of MNIST's paper split).
One torch thread, as a simulated client uses.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from perfedavg import checkpoint, curvature, task
from perfedavg.algorithms import sample_batch
from perfedavg.curvature import spectrum, stability
from perfedavg.data import data_params, load_client

STEPS = (5, 10, 20, 40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--clients", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| run | round | client | λ_max (tol 1e-8) | " + " | ".join(f"{k} steps: ratio, s" for k in STEPS) + " |")
    print("|---|---|---|---|" + "---|" * len(STEPS))
    ratios: dict[int, list[float]] = {k: [] for k in STEPS}
    for run in args.runs:
        state = checkpoint.load(run)
        if state is None:
            raise SystemExit(f"{run}: no checkpoint")
        cfg = state["config"]
        model = task.build_model(cfg["model"], cfg["seed"])
        model.load_state_dict(state["weights"])
        loss_fn = task.build_loss(cfg["dataset"])
        for cid in range(args.clients):
            data = load_client(data_params(cfg), cid, cfg["num_clients"], cfg["seed"])
            generator = stability.probe_generator(cfg["seed"], cid, state["round"])
            batch = sample_batch(data.x_train, data.y_train, cfg["batch_size"], generator)
            op = curvature.HessianOperator(model, loss_fn, batch)
            reference = float(spectrum.hessian_spectrum(model, loss_fn, batch, 1, tol=1e-8, operator=op).values[0])
            cells = []
            for k in STEPS:
                start = time.perf_counter()
                value = spectrum.lanczos_top_eigenvalue(op, k)
                seconds = time.perf_counter() - start
                ratios[k].append(value / reference)
                cells.append(f"{value / reference:.4f}, {seconds:.3f}")
            print(
                f"| {run.parent.name}/{run.name} | {state['round']} | {cid} | {reference:.3f} | "
                + " | ".join(cells)
                + " |"
            )
    print()
    print(
        "Lowest ratio over all: "
        + ", ".join(f"{k} steps {min(ratios[k]):.4f}" for k in STEPS)
        + "; median: "
        + ", ".join(f"{k} steps {statistics.median(ratios[k]):.4f}" for k in STEPS)
        + "."
    )


if __name__ == "__main__":
    main()
