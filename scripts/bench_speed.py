#!/usr/bin/env python
"""perfedavg against the plain loop a researcher would otherwise write, in one run: round times, evaluation,
start-up and memory. Prints Markdown tables (the README's speed table comes from this script).

    .venv/bin/python scripts/bench_speed.py --mnist ../shared/data/mnist        # real MNIST (paper_mnist) + digits
    .venv/bin/python scripts/bench_speed.py --cifar10 ../shared/data/cifar10 --no-digits   # paper_cifar10 only
    .venv/bin/python scripts/bench_speed.py --rounds 8 --modes fd --no-ray      # a quicker look
    .venv/bin/python scripts/bench_speed.py --shakespeare ../shared/data/shakespeare/roles.parquet --no-digits \
        --modes fo,fd --rounds 5 --out scripts/results/speed_shakespeare.md      # LEAF's Shakespeare, real size

For each data set (``experiment=paper_mnist`` with ``dataset.path`` when ``--mnist`` is given,
``experiment=paper_cifar10`` when ``--cifar10`` is, ``experiment=shakespeare`` when ``--shakespeare`` is (there also in
characters per second: windows whose next character a round's minibatches predict), and ``experiment=paper_digits``
unless ``--no-digits``) and each
Hessian mode (fo, fd, hvp) it runs ``--rounds`` training rounds of

* the plain loop (``perfedavg/testing/plain_loop.py``: clients one after another, deepcopy per step, DataLoader batches,
  finite differences through ``load_state_dict``), on the same client tensors perfedavg builds, with 1 and with
  all torch threads; the faster of the two is the reference;
* perfedavg ``backend=inprocess`` with ``inprocess_workers=1`` (clients one after another in the main thread) and
  with one worker per core (a round's clients on a pool of threads: the default where a client's minibatch work
  pays for threads, ``perfedavg.task.POOL_MIN_WORK``), ``client_cpus=1``;
* perfedavg ``backend=ray`` with one 1-CPU actor per core.

Against the machine's limit (:mod:`perfedavg.analysis.arithmetic`): each round's matrix-product FLOPs, counted with
``torch.utils.flop_counter`` on one client's update, the rate the pool achieves (FLOPs / round time), and this
machine's GEMM rate for the model's layer shapes on all its cores, measured in the same run; the floor is FLOPs /
GEMM rate.

Each perfedavg measurement is one ``python -m perfedavg …`` command in its own process, as a user runs it, with
evaluation at rounds R/2 and R. Round figures are medians of the training phase (``time/train_s``) over rounds
2..R−1 (round 1 warms up); ratios are to the plain loop. Evaluation: the evaluation phase of round R (each evaluated
client personalizes and is tested; all were built in round R/2). Start-up: from launching the command to the first round
(imports, validation, data check, Ray and its actors), with the decoded data already cached (the first run on a
machine adds the one-off decode, printed separately). Memory: the peak proportional set size (PSS: shared pages
split between the processes that map them) of the command and all its descendants (Ray's GCS, raylet and workers),
sampled every 0.2 s; Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from perfedavg import task
from perfedavg.analysis import arithmetic
from perfedavg.analysis.results_file import recording
from perfedavg.data import load_client
from perfedavg.data.registry import data_params
from perfedavg.run.runner import compose, prepare
from perfedavg.sampling import clients_per_round
from perfedavg.testing.plain_loop import PlainClient, plain_round, sample

# ---------------------------------------------------------------------------------------------------------------
# Memory of a process tree (Linux /proc)
# ---------------------------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def tree_pss_bytes(root: int) -> int:
    total, stack, seen = 0, [root], set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
        stack.extend(_children(pid))
    return total


# ---------------------------------------------------------------------------------------------------------------
# The three contenders
# ---------------------------------------------------------------------------------------------------------------


def mid_rounds(values: list[float]) -> float:
    """Median over rounds 2..R−1 (or all but the first if there are too few)."""
    inner = values[1:-1] if len(values) > 3 else values[1:] or values
    return statistics.median(inner)


def plain_loop_rounds(cfg: dict, rounds: int, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    model = task.build_model(cfg["model"], cfg["seed"])
    loss_fn = task.build_loss(cfg["dataset"])
    data = [load_client(data_params(cfg), i, cfg["num_clients"], cfg["seed"]) for i in range(cfg["num_clients"])]
    clients = [PlainClient(d.x_train, d.y_train, cfg["batch_size"], cfg["seed"] * 1000 + i) for i, d in enumerate(data)]
    per_round = clients_per_round(cfg["num_clients"], cfg["fraction"])
    rng = np.random.default_rng(cfg["seed"])
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        plain_round(
            model,
            clients,
            sample(rng, cfg["num_clients"], per_round),
            loss_fn,
            cfg["local_steps"],
            cfg["alpha"],
            cfg["beta"],
            cfg["hessian"]["mode"],
            cfg["delta"],
        )
        times.append(time.perf_counter() - t)
    return times


def tree_peak_while(process: subprocess.Popen, period: float = 0.2) -> int:
    """Peak PSS of ``process`` and its descendants until it exits."""
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_pss_bytes(process.pid))
        time.sleep(period)
    return peak


def perfedavg_run(overrides: list[str], backend: str, rounds: int, tmp: Path, *extra: str) -> dict:
    """One ``perfedavg`` command, as a user runs it (its own process; evaluation at rounds R/2 and R)."""
    run_dir = tmp / f"{backend}-{time.time_ns()}"
    command = [
        sys.executable,
        "-m",
        "perfedavg",
        *overrides,
        f"backend={backend}",
        "client_cpus=1",
        f"num_rounds={rounds}",
        f"eval_every={max(1, rounds // 2)}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = tree_peak_while(process)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{process.stderr.read()[-3000:]}")
    summary = json.loads((run_dir / "metrics.json").read_text())
    train = [r["time/train_s"] for r in summary["rounds"]]
    return {
        "round": mid_rounds(train),
        "eval": summary["rounds"][-1]["time/eval_s"],  # the second evaluation: every client seen before
        "startup": summary["timeline"]["first_round_start"] - started,
        "peak_gb": peak / 1e9,
        "clients_eval": int(summary["rounds"][-1].get("clients/evaluated", 0)) or None,
    }


def bench(label: str, overrides: list[str], modes: list[str], rounds: int, ray: bool, tmp: Path) -> None:
    threads_all = os.cpu_count() or 1
    base = prepare(compose(overrides))  # decodes once (if this machine has not yet), outside every timing
    print(f"\n### {label}: `{' '.join(overrides)}`\n")
    print(
        f"{base['num_clients']} clients, {clients_per_round(base['num_clients'], base['fraction'])} per round, "
        f"τ = {base['local_steps']}, batch {base['batch_size']}, model={base['model']['name']}; "
        f"{rounds} rounds each; Ray: {threads_all} actors of 1 CPU\n"
    )
    workers = threads_all  # the pool on every core (the run's default where its clients' work pays for threads)
    print(
        "| hessian | plain loop, 1 thread | plain loop, "
        f"{threads_all} threads | in-process, 1 worker | × plain | in-process, {workers} workers | × plain"
        + (" | Ray | × plain" if ray else "")
        + " |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if ray else ""))
    extra, limits = [], []
    for mode in modes:
        cfg = {**base, "hessian": {**base["hessian"], "mode": mode}}
        plain = {n: mid_rounds(plain_loop_rounds(cfg, rounds, n)) for n in sorted({1, threads_all})}
        reference = min(plain.values())
        one = perfedavg_run([*overrides, f"hessian={mode}"], "inprocess", rounds, tmp, "inprocess_workers=1")
        local = perfedavg_run([*overrides, f"hessian={mode}"], "inprocess", rounds, tmp, f"inprocess_workers={workers}")
        row = (
            f"| {mode} | {plain[1]:.3f} s | {plain[threads_all]:.3f} s | {one['round']:.3f} s | "
            f"{one['round'] / reference:.2f} | {local['round']:.3f} s | {local['round'] / reference:.2f} |"
        )
        limits.append((mode, arithmetic.round_flops(cfg), local["round"], reference))
        if ray:
            distributed = perfedavg_run([*overrides, f"hessian={mode}"], "ray", rounds, tmp)
            row += f" {distributed['round']:.3f} s | {distributed['round'] / reference:.2f} |"
            extra.append((mode, local, distributed))
        else:
            extra.append((mode, local, None))
        print(row, flush=True)
    if base["model"]["name"] == "lstm":  # text: also in characters per second
        characters_per_second(base, extra, limits)
    shapes = arithmetic.gemm_shapes(task.build_model(base["model"], base["seed"]), base["batch_size"])
    if base["model"]["name"] == "lstm":  # its recurrent products are inside nn.LSTM: gemm_shapes sees its head only
        print("\nAgainst the limit: not measured for the LSTM (its recurrent matrix products are not in gemm_shapes)")
    elif shapes:
        rate = arithmetic.gemm_rate(shapes, threads_all)
        print(
            f"\nAgainst the limit: this machine's GEMM rate for the model's layer shapes at batch {base['batch_size']} "
            f"on {threads_all} cores, measured here: {rate / 1e9:.1f} GFLOP/s\n"
        )
        print(
            f"| hessian | matrix-product work per round | in-process, {workers} workers | achieved | of the GEMM rate "
            "| floor (work ÷ GEMM rate) | plain loop |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for mode, flops, seconds, reference in limits:
            print(
                f"| {mode} | {flops / 1e9:.2f} GFLOP | {seconds:.3f} s | {flops / seconds / 1e9:.1f} GFLOP/s | "
                f"{flops / seconds / rate:.0%} | {flops / rate:.3f} s | {reference:.3f} s |"
            )
    print("\n| hessian | backend | evaluation round | start-up to round 1 | peak memory (PSS) |")
    print("|---|---|---:|---:|---:|")
    for mode, local, distributed in extra:
        for name, r in ((f"in-process, {workers} workers", local), ("Ray", distributed)):
            if r is not None:
                print(
                    f"| {mode} | {name} | {r['eval']:.3f} s ({r['clients_eval'] or base['num_clients']} clients) | "
                    f"{r['startup']:.1f} s | "
                    f"{r['peak_gb']:.2f} GB |"
                )


def characters_per_second(base: dict, runs: list[tuple[str, dict, dict | None]], limits: list[tuple]) -> None:
    """Text data sets: the rounds above as characters per second (each window read by a minibatch predicts one
    character; a Per-FedAvg step reads D and D′, and D″ where it applies the Hessian term)."""
    per_round = clients_per_round(base["num_clients"], base["fraction"]) * base["local_steps"] * base["batch_size"]
    reference = {mode: plain for mode, _, _, plain in limits}
    print("\n| hessian | characters per round | plain loop (faster) | in-process pool | Ray |")
    print("|---|---:|---:|---:|---:|")
    for mode, local, distributed in runs:
        chars = per_round * (2 if mode == "fo" else 3)
        ray = f"{chars / distributed['round']:,.0f}/s" if distributed else "–"
        print(f"| {mode} | {chars:,} | {chars / reference[mode]:,.0f}/s | {chars / local['round']:,.0f}/s | {ray} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mnist", help="a local MNIST copy (dataset.path): measure experiment=paper_mnist")
    parser.add_argument("--cifar10", help="a local CIFAR-10 copy (dataset.path): measure experiment=paper_cifar10")
    parser.add_argument("--shakespeare", help="LEAF's Shakespeare parquet (dataset.path): experiment=shakespeare")
    parser.add_argument("--no-digits", action="store_true", help="skip the offline paper_digits setting")
    parser.add_argument("--rounds", type=int, default=12, help="training rounds per measurement (default 12)")
    parser.add_argument("--modes", default="fo,fd,hvp", help="Hessian modes (default fo,fd,hvp)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    parser.add_argument("--out", help="also write the tables to this file (e.g. scripts/results/speed.md)")
    args = parser.parse_args()
    with recording(args.out):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    modes = args.modes.split(",")
    print(f"Machine: {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory() as tmp:
        # A cache of our own, so the first data check below is a cold decode, measured; every run after it is warm.
        os.environ["PERFEDAVG_CACHE_DIR"] = str(Path(tmp) / "decoded")
        for name, path, images in (("MNIST", args.mnist, "60,000"), ("CIFAR-10", args.cifar10, "50,000")):
            if not path:
                continue
            setting = [
                "experiment=paper_mnist" if name == "MNIST" else "experiment=paper_cifar10",
                f"dataset.path={path}",
            ]
            t = time.perf_counter()
            prepare(compose(setting))
            print(
                f"\n{name}, first data check on this machine (prepare(): loads the parquet files, decodes all {images} "
                f"images, partitions, stores them): {time.perf_counter() - t:.1f} s"
            )
            bench(f"real {name}, the paper's setting", setting, modes, args.rounds, not args.no_ray, Path(tmp))
        if args.shakespeare:
            setting = ["experiment=shakespeare", f"dataset.path={args.shakespeare}"]
            t = time.perf_counter()
            prepare(compose(setting))
            print(
                "\nShakespeare, first data check on this machine (prepare(): reads the parquet file, decodes every "
                f"role's text, checks the eligible roles): {time.perf_counter() - t:.1f} s"
            )
            bench(
                "real Shakespeare (LEAF), every role of 450+ characters",
                setting,
                modes,
                args.rounds,
                not args.no_ray,
                Path(tmp),
            )
        if not args.no_digits:
            bench(
                "digits (offline analogue)", ["experiment=paper_digits"], modes, args.rounds, not args.no_ray, Path(tmp)
            )


if __name__ == "__main__":
    main()
