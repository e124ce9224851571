#!/usr/bin/env python
"""Where a federation's wall time goes: start-up, client compute, orchestration; and the Per-FedAvg step cost per
Hessian mode relative to first-order. Prints Markdown tables.

    .venv/bin/python scripts/bench_federation.py                 # the default run (20 clients, 10 per round)
    .venv/bin/python scripts/bench_federation.py num_rounds=10   # any Hydra overrides
    .venv/bin/python scripts/bench_federation.py --no-step-table model=mlp local_steps=10 batch_size=40

Definitions (per round, medians over rounds 2..R; round 1 includes one-off warm-up):
* client compute: the time the ClientApp handlers report for their own work (train + evaluation, summed over the
  round's clients), divided by the number of Ray actors working in parallel: the round time a perfect engine would
  reach. The same config is also run in-process (no Ray, clients one after another) as a cross-check.
* orchestration: round time minus that ideal: message passing, scheduling, waiting on the slowest actor.
* start-up: from calling ``run`` to the first round (Ray start, actor start, node discovery).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from perfedavg import algorithms, task
from perfedavg.engines.client_app import app as client_app
from perfedavg.engines.client_app import client_data, client_generator
from perfedavg.engines.inprocess_grid import InProcessGrid
from perfedavg.federation.record import run_and_record
from perfedavg.run.runner import compose, prepare, run
from perfedavg.task import local_spec


def per_round(summary: dict, key: str) -> list[float]:
    return [r.get(key, 0.0) for r in summary["rounds"][1:]]


def federation_table(overrides: list[str]) -> None:
    cfg = prepare(compose(overrides))
    actors = max(1, int((os.cpu_count() or 1) // cfg["client_cpus"]))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        ray = run(cfg, Path(tmp) / "ray")
        t_total = time.time() - t0
        local = run_and_record(InProcessGrid(client_app, cfg["num_clients"]), cfg, Path(tmp) / "local")
    startup = ray["timeline"]["first_round_start"] - t0
    round_s = statistics.median(per_round(ray, "time/round_s"))
    compute = [
        a + b for a, b in zip(per_round(ray, "time/train_compute_total_s"), per_round(ray, "time/eval_compute_total_s"))
    ]
    ideal = statistics.median(compute) / actors
    local_round = statistics.median(per_round(local, "time/round_s"))
    per_client = statistics.median(per_round(ray, "time/client_compute_s"))
    clients = int(ray["rounds"][0]["clients/trained"])
    print(
        f"Federation: `{' '.join(overrides) or '(default)'}` — {cfg['num_rounds']} rounds, {cfg['num_clients']} "
        f"clients, {clients} per round, {actors} Ray actors\n"
    )
    print("| part | seconds | share of a round |")
    print("|---|---:|---:|")
    print(f"| whole run (`run()` call) | {t_total:.1f} | |")
    print(f"| start-up (to round 1) | {startup:.1f} | |")
    print(f"| round (median) | {round_s:.3f} | 100% |")
    print(f"| client compute / {actors} actors (ideal round) | {ideal:.3f} | {100 * ideal / round_s:.0f}% |")
    print(f"| orchestration (round − ideal) | {round_s - ideal:.3f} | {100 * (round_s - ideal) / round_s:.0f}% |")
    print(f"| one client's training (median) | {per_client:.3f} | |")
    print(f"| in-process round, clients in sequence (cross-check) | {local_round:.3f} | |")
    print()


def step_cost_table(overrides: list[str], repeats: int = 7) -> None:
    base = prepare(compose(overrides))
    data = client_data(base, 0)
    print(
        f"Local update of one client (`local_steps={base['local_steps']}`, `batch_size={base['batch_size']}`, "
        f"model={base['model']['name']}), median of {repeats} after a warm-up (one run for updates over 5 s):\n"
    )
    print("| algorithm / hessian | seconds | × fo |")
    print("|---|---:|---:|")
    times = {}
    for label, alg, mode in [
        ("perfedavg / fo", "perfedavg", "fo"),
        ("perfedavg / fd", "perfedavg", "fd"),
        ("perfedavg / hvp", "perfedavg", "hvp"),
        ("perfedavg / diag", "perfedavg", "diag"),
        ("perfedavg / exact", "perfedavg", "exact"),
        ("fedavg", "fedavg", "fo"),
    ]:
        cfg = {**base, "algorithm": {"name": alg}, "hessian": {**base["hessian"], "mode": mode}}
        spec = local_spec(cfg)
        loss_fn = task.build_loss(cfg["dataset"])
        model = task.build_model(cfg["model"], cfg["seed"])  # one model per worker, as in the ClientApp
        start = {k: v.clone() for k, v in model.state_dict().items()}
        samples = []
        for r in range(repeats + 1):
            model.load_state_dict(start)
            t = time.perf_counter()
            algorithms.local_update(model, loss_fn, data.x_train, data.y_train, spec, client_generator(0, 0, r))
            samples.append(time.perf_counter() - t)
            if samples[0] > 5 and len(samples) == 2:  # slow modes (exact): one warm-up and one measured update
                break
        times[label] = statistics.median(samples[1:])
        print(f"| {label} | {times[label]:.4f} | {times[label] / times['perfedavg / fo']:.2f} |")
    print()


def main() -> None:
    overrides = [a for a in sys.argv[1:] if not a.startswith("--")]
    torch.set_num_threads(1)  # as each simulated client does (client_cpus=1)
    print(f"Machine: {os.cpu_count()} cores, torch {torch.__version__}\n")
    if "--no-step-table" not in sys.argv:
        step_cost_table(overrides)
    federation_table(overrides)


if __name__ == "__main__":
    main()
