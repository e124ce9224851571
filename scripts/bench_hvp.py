#!/usr/bin/env python
"""The cost of a Hessian-vector product per shipped model and path, in gradients: which exact path ``hessian=hvp``
should take (``perfedavg.curvature.HVP_PATH_BY_MODEL``; ``tests/test_curvature.py`` checks the table against the
file this writes).

    .venv/bin/python scripts/bench_hvp.py --out scripts/results/hvp_paths.md

Each model at the size and batch it is shipped with (random inputs of the data set's shape), torch on one thread (a
client's ``client_cpus=1``): the median of ``--repeats`` calls after two warm-up calls of a gradient
(``ScratchModel.loss_and_gradient``), the double backward (``reverse``, :func:`perfedavg.curvature.hvp`),
forward-over-reverse (``forward``, :func:`perfedavg.curvature.hvp_forward_over_reverse`) and the paper's finite
difference (``fd``: two gradients, not exact). The two exact paths are also compared with each other (relative
difference). The fastest exact path is the one to use.
"""

from __future__ import annotations

import argparse
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
    setting, batch_size = MODELS[name][5], MODELS[name][4]
    return (
        f"| {name} | {setting} | {w.numel():,} | {batch_size} | {gradient * 1e3:.2f} ms | {reverse / gradient:.2f} | "
        f"{forward_text} | {agreement} | {fd / gradient:.2f} | {fastest} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per path (default 20)")
    parser.add_argument("--out", help="also write the table to this file (e.g. scripts/results/hvp_paths.md)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with recording(args.out):
        print(
            f"Machine: {platform.machine()}, torch {torch.__version__} on 1 thread; median of {args.repeats} calls.\n"
        )
        print(
            "| model | setting | P | batch | gradient | reverse (double backward), × gradient | forward-over-reverse, "
            "× gradient | exact paths differ by | fd (not exact), × gradient | fastest exact path |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for name in args.models:
            print(measure(name, args.repeats), flush=True)


if __name__ == "__main__":
    main()
