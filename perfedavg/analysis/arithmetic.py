"""How much arithmetic a round is, and how fast this machine can do it: the yardstick of the speed benchmark
(``scripts/bench_speed.py``) beside the plain loop.

**FLOPs of a round.** One client's local update (``Algorithm.local_update``, the run's algorithm and Hessian mode)
is run once under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts every matrix product and
convolution autograd executes — the forward passes, the backward passes, the double backward of an HVP — at 2 FLOPs
per multiply-add; elementwise work (activations, the loss, the optimizer's axpy) is not counted, so the figure is
the GEMM work only. Every client of a round does the same number of steps on batches of the same size, so the
round is that count × the clients per round. For the paper's CIFAR-10 MLP (3072-80-60-10: W = 251,160 weights, of
which W₁ = 245,760 in the first layer) at batch B = 40 one gradient is 2BW (forward) + 2BW (weight gradients) +
2B(W − W₁) (input gradients; none for the first layer, whose input needs none) ≈ 40.6 MFLOP, and an fd step is 4
gradients (``∇f(w)``, ``∇f(w̃)`` and the two perturbed ones): 10 clients × 10 steps × 4 × 40.6 MFLOP ≈ 16.2 GFLOP a
round (counted: 16.25). An estimate of 6BW per gradient (≈ 24 GFLOP) counts the first layer's input gradient, which
autograd never computes.

**The machine's GEMM rate** for the same model: the matrix products of one gradient of its linear layers (per layer
``x W`` forward, and ``g Wᵀ`` (not for the first layer) and ``gᵀ x`` backward, at the run's batch size), repeated,
on ``threads`` cores —
run both as one stream with ``threads`` intra-op threads and as ``threads`` Python threads with one intra-op thread
each; the faster of the two is the rate. A round at that rate would take FLOPs / rate: the floor that Python,
autograd's bookkeeping and the elementwise work add to.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from perfedavg import algorithms, task
from perfedavg.data import load_client
from perfedavg.data.registry import data_params
from perfedavg.sampling import clients_per_round


def client_update_flops(cfg: dict[str, Any], client_id: int = 0) -> int:
    """The matrix-product FLOPs of client ``client_id``'s local update under run config ``cfg`` (see the module's
    docstring): one update, counted, on a fresh model."""
    model = task.build_model(cfg["model"], cfg["seed"])
    data = load_client(data_params(cfg), client_id, cfg["num_clients"], cfg["seed"])
    algorithm = algorithms.get(cfg["algorithm"]["name"])
    counter = FlopCounterMode(display=False)
    with counter:
        algorithm.local_update(
            model,
            task.build_loss(cfg["dataset"]),
            data.x_train,
            data.y_train,
            task.local_spec(cfg),
            torch.Generator().manual_seed(0),
            state=algorithm.initial_state(torch.nn.utils.parameters_to_vector(model.parameters()).detach()),
        )
    return int(counter.get_total_flops())


def round_flops(cfg: dict[str, Any]) -> int:
    """The matrix-product FLOPs of one training round: a client's update × the clients a round samples."""
    return client_update_flops(cfg) * clients_per_round(cfg["num_clients"], cfg["fraction"])


def gemm_shapes(model: nn.Module, batch_size: int) -> list[tuple[int, int, int]]:
    """``(m, k, n)`` of each matrix product of one gradient through ``model``'s linear layers at ``batch_size``:
    forward ``[B, in] @ [in, out]``, weight gradient ``[out, B] @ [B, in]``, and input gradient ``[B, out] @ [out,
    in]`` for every layer but the first (the data need no gradient). Empty for a model without linear layers."""
    shapes: list[tuple[int, int, int]] = []
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            i, o, b = layer.in_features, layer.out_features, batch_size
            shapes += [(b, i, o), (o, b, i)] + ([(b, o, i)] if shapes else [])
    return shapes


def _gemm_stream(shapes: list[tuple[int, int, int]], seconds: float, intra_threads: int) -> tuple[int, float]:
    """Repeat the products of ``shapes`` for about ``seconds`` on ``intra_threads`` intra-op threads (of the calling
    thread); returns (FLOPs done, seconds taken)."""
    torch.set_num_threads(intra_threads)
    pairs = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]
    outs = [torch.empty(m, n) for m, _, n in shapes]
    per_pass = sum(2 * m * k * n for m, k, n in shapes)
    for (a, b), out in zip(pairs, outs):  # warm the kernels and caches
        torch.mm(a, b, out=out)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for (a, b), out in zip(pairs, outs):
            torch.mm(a, b, out=out)
        done += per_pass
    return done, time.perf_counter() - start


def gemm_rate(shapes: list[tuple[int, int, int]], threads: int, seconds: float = 1.0, repeats: int = 3) -> float:
    """This machine's rate (FLOP/s) for the products of ``shapes`` on ``threads`` cores: the median of ``repeats``
    measurements of the faster arrangement (one stream with ``threads`` intra-op threads, or ``threads`` Python
    threads of one intra-op thread each)."""
    if not shapes:
        raise ValueError("no matrix products to time (the model has no linear layers)")
    previous = torch.get_num_threads()
    try:
        one_stream = [_rate([_gemm_stream(shapes, seconds, threads)]) for _ in range(repeats)]
        parallel = [_rate(_in_threads(shapes, seconds, threads)) for _ in range(repeats)] if threads > 1 else []
    finally:
        torch.set_num_threads(previous)
    return max(statistics.median(one_stream), statistics.median(parallel) if parallel else 0.0)


def _rate(results: list[tuple[int, float]]) -> float:
    """Total FLOP/s of streams that ran side by side: their FLOPs over the longest one's time."""
    return sum(f for f, _ in results) / max(s for _, s in results)


def _in_threads(shapes: list[tuple[int, int, int]], seconds: float, threads: int) -> list[tuple[int, float]]:
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def work() -> None:
        result = _gemm_stream(shapes, seconds, 1)
        with lock:
            results.append(result)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return results
