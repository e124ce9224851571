"""Config → the model, its loss and its task; shared by the client and server apps (no Flower here)."""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from perfedavg.algorithms.base import LocalSpec
from perfedavg.models import ANN, CNN, MLP, CharLSTM, Net


def build_model(model_cfg: Mapping[str, Any], seed: int) -> nn.Module:
    """The configured network with initial weights drawn from ``seed`` (identical on every machine)."""
    shape = list(model_cfg["input_shape"])
    name = model_cfg["name"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "ann":
            return ANN()
        if name == "net":
            channels, height, width = shape
            return Net(height, width, in_channels=channels, num_classes=int(model_cfg["num_outputs"]))
        if name == "mlp":
            return MLP(math.prod(shape), int(model_cfg["num_outputs"]), hidden=tuple(model_cfg["hidden"]))
        if name == "cnn":
            channels, height, width = shape
            widths, (hidden,) = tuple(model_cfg["channels"]), model_cfg["hidden"]
            return CNN(channels, height, width, int(model_cfg["num_outputs"]), channels=widths, hidden=hidden)
        if name == "lstm":
            (hidden,) = model_cfg["hidden"]
            layers, embedding = int(model_cfg["layers"]), int(model_cfg["embedding"])
            return CharLSTM(int(model_cfg["num_outputs"]), embedding=embedding, hidden=hidden, layers=layers)
    raise ValueError(f"model={name!r} is not one of: ann, net, mlp, cnn, lstm")


def compute_device(cfg: Mapping[str, Any]) -> torch.device:
    """Where a client computes for run config ``cfg``: its ``device``, with ``auto`` decided in the calling process
    (CUDA if this process sees a GPU: under Ray only actors that reserve ``client_gpus`` do)."""
    device = str(cfg.get("device") or "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def is_classification(dataset_cfg: Mapping[str, Any]) -> bool:
    return dataset_cfg["task"] == "classification"


def build_loss(dataset_cfg: Mapping[str, Any]) -> nn.Module:
    """Cross-entropy for classification, mean-squared error for regression (module forms: BackPACK-ready)."""
    return nn.CrossEntropyLoss() if is_classification(dataset_cfg) else nn.MSELoss()


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (a SLURM job's or a container's
    allocation, not the whole node), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def concurrent_clients(cfg: Mapping[str, Any]) -> int:
    """How many clients of run config ``cfg`` may compute at the same time on this machine: under Ray, the actors
    its CPUs hold (Ray is started with ``num_cpus`` = this machine's CPUs, ``client_cpus`` each); in-process, the
    pool's threads (:func:`inprocess_workers`)."""
    if cfg.get("backend") == "inprocess":
        return inprocess_workers(cfg)
    return max(1, int(available_cpus() // float(cfg["client_cpus"])))


#: A client's minibatch work (:func:`minibatch_work`) below which the in-process pool's default is one worker: such a
#: client is mostly Python and autograd bookkeeping, which threads cannot overlap (they share the interpreter lock).
#: Measured (scripts/results/speed.md, 2 cores): the digits MLP (≈ 0.1 M) ran 1.2–1.4× slower on two threads than
#: on one; the MNIST MLP (2.7 M) 1.14–1.38× faster and the CIFAR-10 MLP (10 M) 1.33–1.43× faster.
POOL_MIN_WORK = 1_000_000


def minibatch_work(cfg: Mapping[str, Any]) -> int:
    """``batch_size`` × the model's parameter count: a proxy for the multiply-adds of one forward pass of a client's
    minibatch (exact for a dense network; a convolution or a recurrence reuses its weights and does more)."""
    return int(cfg["batch_size"]) * parameter_count(cfg["model"])


def parameter_count(model_cfg: Mapping[str, Any]) -> int:
    """The trainable parameters of the configured network (built once per configuration and process)."""
    return _parameter_count(json.dumps(dict(model_cfg), sort_keys=True, default=list))


@functools.lru_cache(maxsize=16)
def _parameter_count(model_json: str) -> int:
    model = build_model(json.loads(model_json), 0)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def inprocess_workers(cfg: Mapping[str, Any]) -> int:
    """The threads an in-process run computes its clients on: ``inprocess_workers`` where set, else every core given
    to the run (:func:`available_cpus`) at ``client_cpus`` each, and no more than a round sends messages to (the
    larger of the training and the evaluation sample); one for a run that traces its model (:func:`traces_with_fx`)
    or whose clients' work is too small to gain from threads (:data:`POOL_MIN_WORK`)."""
    from perfedavg.sampling import clients_per_round

    given = cfg.get("inprocess_workers")
    if given is not None:
        return int(given)
    if traces_with_fx(cfg) or minibatch_work(cfg) < POOL_MIN_WORK:
        return 1
    busiest = max(
        clients_per_round(cfg["num_clients"], cfg["fraction"]),
        clients_per_round(cfg["num_clients"], cfg.get("eval_fraction", 1.0)),
    )
    return max(1, min(int(available_cpus() // float(cfg["client_cpus"])), busiest))


def traces_with_fx(cfg: Mapping[str, Any]) -> bool:
    """Whether run config ``cfg``'s clients trace their model with ``torch.fx`` (``hessian=diag``: BackPACK's
    one-pass diagonal on a traced copy). Tracing patches ``torch.nn.Module`` for the whole process, so no other
    thread may run a forward pass meanwhile: such a run computes its clients one at a time in-process."""
    from perfedavg.algorithms import declaration_of

    return cfg["hessian"]["mode"] == "diag" and declaration_of(cfg["algorithm"]["name"]).uses_hessian


def hessian_budget_gb(cfg: Mapping[str, Any]) -> float:
    """The memory one client may use for an exact P×P Hessian: the run's budget (``hessian.max_memory_gb``, default
    half the available memory) shared among the clients that may build one at the same time
    (:func:`concurrent_clients`), so that together they stay within it."""
    from perfedavg.curvature import default_memory_budget_gb

    given = cfg["hessian"].get("max_memory_gb")
    total = default_memory_budget_gb() if given is None else float(given)
    return total / concurrent_clients(cfg)


def local_spec(cfg: Mapping[str, Any]) -> LocalSpec:
    """What each client of run config ``cfg`` does in a round (its exact-Hessian budget shared as above); the
    algorithm's own keys (``algorithm.*``) as its declaration lists them, a key left unset at its declared default."""
    name = cfg["algorithm"]["name"]
    return LocalSpec(
        algorithm=name,
        hessian=cfg["hessian"]["mode"],
        alpha=cfg["alpha"],
        beta=cfg["beta"],
        delta=cfg["delta"],
        local_steps=cfg["local_steps"],
        batch_size=cfg["batch_size"],
        max_memory_gb=hessian_budget_gb(cfg) if cfg["hessian"]["mode"] == "exact" else None,
        adapt_steps=cfg["adapt_steps"],
        adapt_batch=cfg.get("adapt_batch"),
        options=algorithm_options(cfg),
    )


def algorithm_options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The run's values of its algorithm's own keys (``algorithm.*``, as its declaration lists them), a key left
    unset at its declared default."""
    from perfedavg import algorithms

    given = cfg["algorithm"]
    declared = algorithms.declaration_of(given["name"])
    return {k.name: k.default if given.get(k.name) is None else given[k.name] for k in declared.keys}
