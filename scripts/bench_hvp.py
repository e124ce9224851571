#!/usr/bin/env python
"""The cost of a Hessian-vector product per shipped model and path, in gradients: which exact path ``hessian=hvp``
should take (``perfedavg.curvature.HVP_PATH_BY_MODEL``; ``tests/test_curvature.py`` checks the table against the
file this writes).

    .venv/bin/python scripts/bench_hvp.py --fashion-mnist /path/to/fashion_mnist --out scripts/results/hvp_paths.md

Each model at the size and batch it is shipped with (random inputs of the data set's shape), torch on one thread (a
client's ``client_cpus=1``): the median of ``--repeats`` calls after two warm-up calls of a gradient
(``ScratchModel.loss_and_gradient``), the double backward (``reverse``, :func:`perfedavg.curvature.hvp`),
forward-over-reverse (``forward``, :func:`perfedavg.curvature.hvp_forward_over_reverse`) and the paper's finite
difference (``fd``: two gradients, not exact). The two exact paths are also compared with each other (relative
difference). ``hessian=hvp`` takes the double backward wherever it works, the fastest path or not: forward-over-reverse
holds a process-wide lock (torch's forward-AD levels are global to the process, ``FORWARD_AD_LOCK``), so on the
in-process pool it would serialise the clients' products, a larger loss than the few per cent it gains on one thread.
With ``--fashion-mnist`` the script shows that loss: the CNN's ``hessian=hvp`` training round on Fashion-MNIST
(Dirichlet(0.1), 10 clients) by each path on one worker and on one worker per core, medians of ``--rounds`` rounds.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from perfedavg import curvature, task
from perfedavg.analysis.results_file import recording

#: name → (model config, input shape of one sample, input kind, classes, batch size, setting)
MODELS: dict[str, tuple[dict, tuple[int, ...], str, int, int, str]] = {
    "ANN": ({"name": "ann"}, (3,), "regression", 5, 8, "regression (seed ANN)"),
    "Net": ({"name": "net"}, (1, 8, 8), "image", 10, 10, "digits 8×8 (seed Net)"),
    "MLP": ({"name": "mlp", "hidden": [80, 60]}, (1, 28, 28), "image", 10, 40, "MNIST, the paper's MLP"),
    "MLP (CIFAR-10)": ({"name": "mlp", "hidden": [80, 60]}, (3, 32, 32), "image", 10, 40, "CIFAR-10, the paper's MLP"),
    "CNN": (
        {"name": "cnn", "channels": [32, 64], "hidden": [512]},
        (1, 28, 28),
        "image",
        10,
        40,
        "Fashion-MNIST, the FedAvg CNN",
    ),
    "CharLSTM": (
        {"name": "lstm", "hidden": [256], "embedding": 8, "layers": 2},
        (80,),
        "text",
        81,
        10,
        "Shakespeare, LEAF's LSTM",
    ),
}


def build(name: str) -> tuple[torch.nn.Module, torch.nn.Module, tuple[torch.Tensor, torch.Tensor]]:
    cfg, shape, kind, classes, batch, _ = MODELS[name]
    generator = torch.Generator().manual_seed(0)
    model = task.build_model({**cfg, "input_shape": list(shape), "num_outputs": classes}, 0)
    if kind == "text":
        x = torch.randint(classes, (batch, *shape), generator=generator)
    else:
        x = torch.randn(batch, *shape, generator=generator)
    if kind == "regression":
        return model, torch.nn.MSELoss(), (x, torch.randn(batch, classes, generator=generator))
    return model, torch.nn.CrossEntropyLoss(), (x, torch.randint(classes, (batch,), generator=generator))


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(name: str, repeats: int) -> str:
    model, loss_fn, batch = build(name)
    scratch = curvature.ScratchModel(model, loss_fn)
    w = curvature.flat_parameters(model).detach().clone()
    v = torch.randn(w.numel(), generator=torch.Generator().manual_seed(1))
    gradient = median_seconds(lambda: scratch.loss_and_gradient(batch, w), repeats)
    reverse = median_seconds(lambda: curvature.hvp(model, loss_fn, batch, v), repeats)
    fd = median_seconds(lambda: scratch.fd_hvp(batch, v, w), repeats)
    scratch.load(w)
    try:
        forward = median_seconds(lambda: curvature.hvp_forward_over_reverse(model, loss_fn, batch, v), repeats)
        a = curvature.hvp(model, loss_fn, batch, v)
        b = curvature.hvp_forward_over_reverse(model, loss_fn, batch, v)
        forward_text = f"{forward / gradient:.2f}"
        agreement = f"{float((a - b).norm() / a.norm()):.1e}"
    except (NotImplementedError, RuntimeError) as e:  # torch.func's limits (a fused kernel, a zero tensor)
        forward = float("inf")
        forward_text = f"fails: {type(e).__name__} ({str(e).splitlines()[0][:70]})"
        agreement = "–"
    fastest = "reverse" if reverse <= forward else "forward"
    chosen = "reverse"  # works through every shipped model; the module docstring says why it is taken
    setting, batch_size = MODELS[name][5], MODELS[name][4]
    return (
        f"| {name} | {setting} | {w.numel():,} | {batch_size} | {gradient * 1e3:.2f} ms | {reverse / gradient:.2f} | "
        f"{forward_text} | {agreement} | {fd / gradient:.2f} | {fastest} | {chosen} |"
    )


def round_seconds(path: str, workers: int, data: str, rounds: int) -> float:
    """The median ``time/train_s`` of a CNN federation's training rounds with ``hessian=hvp`` on
    ``path``, ``workers`` clients at a time (in-process); evaluation only after the last round, on one client."""
    import tempfile
    from pathlib import Path

    from perfedavg.run.runner import compose, run

    overrides = [
        "experiment=dirichlet_fashion_mnist_alpha0.1_tuned",
        f"dataset.path={data}",
        "model=cnn",
        "hessian=hvp",
        f"num_rounds={rounds}",
        "eval_every=1000",
        "eval_fraction=0.02",
        "backend=inprocess",
        f"inprocess_workers={workers}",
    ]
    table = curvature.HVP_PATH_BY_MODEL
    shipped = table["CNN"]
    table["CNN"] = path
    try:
        with tempfile.TemporaryDirectory() as out:
            summary = run(compose(overrides), Path(out) / "run")
    finally:
        table["CNN"] = shipped
    return statistics.median(r["time/train_s"] for r in summary["rounds"])


def round_table(data: str, rounds: int) -> None:
    cores = os.cpu_count() or 1
    print(f"\nThe CNN's hessian=hvp training round on Fashion-MNIST Dirichlet(0.1), 10 clients, median of {rounds}:\n")
    print(f"| path | 1 worker | {cores} workers | gain |")
    print("|---|---:|---:|---:|")
    for path in ("reverse", "forward"):
        one = round_seconds(path, 1, data, rounds)
        pool = round_seconds(path, cores, data, rounds)
        print(f"| {path} | {one:.2f} s | {pool:.2f} s | {one / pool:.2f}× |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per path (default 20)")
    parser.add_argument("--fashion-mnist", help="Fashion-MNIST folder: also time the CNN's round by each path")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per federation with --fashion-mnist")
    parser.add_argument("--out", help="also write the table to this file (e.g. scripts/results/hvp_paths.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with recording(args.out):
        print(
            f"Machine: {platform.machine()}, torch {torch.__version__} on 1 thread; median of {args.repeats} calls.\n"
        )
        print(
            "| model | setting | P | batch | gradient | reverse (double backward), × gradient | forward-over-reverse, "
            "× gradient | exact paths differ by | fd (not exact), × gradient | fastest exact path | hessian=hvp takes |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        for name in args.models:
            print(measure(name, args.repeats), flush=True)
        if args.fashion_mnist:
            round_table(args.fashion_mnist, args.rounds)


if __name__ == "__main__":
    main()
