#!/usr/bin/env python
"""Benchmark perfedavg.curvature against the seeds' recipes: time, peak memory, ratios. Prints a Markdown table.

Every (model, method) runs in a fresh subprocess, so its peak resident memory (``ru_maxrss`` after the call minus
before it) is its own. Fast methods report the median of 50 calls after 5 warm-up calls, each call followed by a
gradient whose median gives the "× gradient" ratio; the slow ones run once, after one warm-up call on the tiny ANN
(so one-off initialisation is not counted).

    .venv/bin/python scripts/bench_curvature.py            # all models (about 4 minutes on 2 cores)
    .venv/bin/python scripts/bench_curvature.py --models ann net8
    .venv/bin/python scripts/bench_curvature.py --threads 2

Torch runs with ``--threads`` threads (default 1: what each simulated client uses, ``client_cpus=1``; with two
threads the millisecond-scale calls were bimodal across processes here, e.g. hvp 1.6 or 2.6 ms on Net(8, 8)).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

MODELS = {
    # name: (description, batch size)
    "ann": ("ANN (seed 1), MSE", 8),
    "net8": ("Net(8,8) (seed 2), CE", 8),
    "net12": ("Net(12,12) (seed 2), CE", 8),
    "mlp": ("MLP 784-80-60-10 ELU, CE", 40),
}
METHODS = [
    "gradient",
    "seed diagonal loop",
    "seed row loop",
    "autograd.functional.hessian",
    "hessian",
    "hessian_diag",
    "hessian_diag, functional loss",
    "hvp",
    "fd_hvp",
    "top eigenvalue (tol 1e-3)",
    "meta-step diagnostics",
]
SLOW = {"seed diagonal loop", "seed row loop", "autograd.functional.hessian", "hessian"}  # run once each
FAST = {m for m in METHODS if m not in SLOW}
REPEATS = 50


def build(name: str):
    import torch
    from torch import nn

    from perfedavg.models import ANN, MLP, Net

    torch.manual_seed(0)
    n = MODELS[name][1]
    if name == "ann":
        return ANN(), nn.MSELoss(), (torch.randn(n, 3), torch.randn(n, 5))
    if name.startswith("net"):
        side = int(name[3:])
        return Net(side, side), nn.CrossEntropyLoss(), (torch.randn(n, 1, side, side), torch.randint(0, 5, (n,)))
    return MLP(784, 10), nn.CrossEntropyLoss(), (torch.randn(n, 1, 28, 28), torch.randint(0, 10, (n,)))


def seed_diagonal_loop(model, loss_fn, batch):
    """The first seed's recipe: one extra backward per parameter element, keeping its own second derivative."""
    import torch

    params = list(model.parameters())
    loss = loss_fn(model(batch[0]), batch[1])
    grads = torch.autograd.grad(loss, params, create_graph=True)
    out = []
    for k, g in enumerate(grads):
        flat, h = g.reshape(-1), torch.zeros(g.numel())
        for i in range(flat.numel()):
            h[i] = torch.autograd.grad(flat[i], params, retain_graph=True)[k].reshape(-1)[i]
        out.append(h)
    return torch.cat(out)


def seed_row_loop(model, loss_fn, batch):
    """The third seed's first recipe: loop over gradient elements, one backward per full Hessian row."""
    import torch

    params = list(model.parameters())
    loss = loss_fn(model(batch[0]), batch[1])
    flat = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, create_graph=True)])
    H = torch.empty(flat.numel(), flat.numel())
    for i in range(flat.numel()):
        H[i] = torch.cat([r.reshape(-1) for r in torch.autograd.grad(flat[i], params, retain_graph=True)])
    return H


def functional_hessian(model, loss_fn, batch):
    """The seeds' ``torch.autograd.functional.hessian`` recipe, made correct with ``functional_call``."""
    import torch
    from torch.func import functional_call

    from perfedavg import curvature as C

    layout = C.parameter_layout(model)

    def f(flat):
        return loss_fn(functional_call(model, layout.as_dict(flat), (batch[0],)), batch[1])

    return torch.autograd.functional.hessian(f, C.flat_parameters(model))


def method_fn(method: str, model, loss_fn, batch) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    from perfedavg import curvature as C
    from perfedavg.curvature import diagnostics

    v = torch.randn(C.parameter_layout(model).size, generator=torch.Generator().manual_seed(1))
    functional = F.mse_loss if isinstance(loss_fn, torch.nn.MSELoss) else F.cross_entropy  # the same loss
    w = C.flat_parameters(model)
    return {
        "gradient": lambda: C.gradient(model, loss_fn, batch),
        "seed diagonal loop": lambda: seed_diagonal_loop(model, loss_fn, batch),
        "seed row loop": lambda: seed_row_loop(model, loss_fn, batch),
        "autograd.functional.hessian": lambda: functional_hessian(model, loss_fn, batch),
        "hessian": lambda: C.hessian(model, loss_fn, batch),
        "hessian_diag": lambda: C.hessian_diag(model, loss_fn, batch),
        "hvp": lambda: C.hvp(model, loss_fn, batch, v),
        "fd_hvp": lambda: C.fd_hvp(model, loss_fn, batch, v, 1e-3),
        "hessian_diag, functional loss": lambda: C.hessian_diag(model, functional, batch),
        "top eigenvalue (tol 1e-3)": lambda: C.hessian_spectrum(model, loss_fn, batch, 1, tol=1e-3),
        "meta-step diagnostics": lambda: diagnostics.meta_step_diagnostics(model, loss_fn, batch, v, w, 0.05, 1e-3),
    }[method]


def run_one(model_name: str, method: str) -> dict:
    """Measure one (model, method) in this process; return seconds and peak memory growth in MB."""
    from perfedavg import curvature as C

    model, loss_fn, batch = build(model_name)
    p = C.parameter_layout(model).size
    if method in {"hessian", "seed row loop", "autograd.functional.hessian"}:
        try:  # the same guard for every full-Hessian method: nothing above half the available memory
            C.check_hessian_fits(p, next(model.parameters()).dtype)
        except C.HessianTooLargeError as e:
            return {"P": p, "skipped": str(e).split(";")[0]}
    fn = method_fn(method, model, loss_fn, batch)
    grad = method_fn("gradient", model, loss_fn, batch)
    if method in FAST:
        for _ in range(5):
            fn()
            grad()
    else:  # pay one-off initialisation (e.g. vmap's first use) on the tiny ANN, not on the measured call
        method_fn(method, *build("ann"))()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, grad_times = [], []
    products = None
    for _ in range(REPEATS if method in FAST else 1):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
        products = getattr(result, "products", products)
        if method in FAST:  # a gradient right after each call: the ratio is taken under the same conditions
            t = time.perf_counter()
            grad()
            grad_times.append(time.perf_counter() - t)
    peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    out = {"P": p, "seconds": statistics.median(times), "peak_mb": peak_mb}
    if products is not None:
        out["products"] = products
    if grad_times:
        out["ratio"] = out["seconds"] / statistics.median(grad_times)
    return out


def measure(model_name: str, method: str, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--threads", str(threads), "--one", model_name, method],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        return {"skipped": f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt_time(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.1f} s"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as a simulated client)")
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return

    print(f"Machine: {machine()}\n")
    print("| model (batch) | P | method | time | × gradient | peak memory | vs seed |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name in args.models:
        rows = {}
        for method in METHODS:
            print(f"  … {name}: {method}", file=sys.stderr, flush=True)
            rows[method] = measure(name, method, args.threads)
        grad_s = rows["gradient"].get("seconds")
        for method in METHODS:
            r = rows[method]
            label = f"{MODELS[name][0]} ({MODELS[name][1]})"
            p = f"{r['P']:,}" if "P" in r else ""
            if "skipped" in r:
                print(f"| {label} | {p} | {method} | — | — | — | {r['skipped']} |")
                continue
            # Fast methods: against the gradient timed alternately in the same process; slow ones: against the
            # gradient row (a ratio in the thousands is not sensitive to the gradient's few-percent noise).
            ratio = f"{r.get('ratio', r['seconds'] / grad_s):.2f}" if grad_s else ""
            seed = {
                "hessian": "seed row loop",
                "hessian_diag": "seed diagonal loop",
                "hessian_diag, functional loss": "seed diagonal loop",
            }.get(method)
            vs = ""
            if seed and "seconds" in rows[seed]:
                vs = f"{rows[seed]['seconds'] / r['seconds']:.0f}× faster"
            shown = f"{method}: {r['products']} HVPs" if "products" in r else method
            print(f"| {label} | {p} | {shown} | {fmt_time(r['seconds'])} | {ratio} | {r['peak_mb']:.0f} MB | {vs} |")


if __name__ == "__main__":
    main()
