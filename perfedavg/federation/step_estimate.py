"""How long a slow run's rounds will take, said before the first one: ``hessian=exact`` costs P Hessian-vector
products per local step (the default Net: ≈ 10 s a step on 2 cores), which would otherwise leave a run silent for
minutes before its first round line. No Flower here."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from perfedavg import algorithms, curvature, task
from perfedavg.config import clients_per_round

#: Rounds estimated to take at least this long get a line before the first one.
SLOW_ROUND_S = 10.0


def measure_local_step_s(cfg: Mapping[str, Any]) -> float:
    """Seconds one client's local step of run config ``cfg`` takes here: one step timed on a random minibatch of the
    run's shape (the cost of a step does not depend on the values), on the clients' device and thread count, after a
    warm-up (one Hessian-vector product: torch's first double backward imports and compiles what it needs).

    Cost: one local step (for ``hessian=exact``, P Hessian-vector products) plus one HVP."""
    device = task.compute_device(cfg)
    model = task.build_model(cfg["model"], cfg["seed"]).to(device)
    loss_fn = task.build_loss(cfg["dataset"])
    spec = task.local_spec(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(spec.batch_size, *cfg["model"]["input_shape"], device=device)
        with torch.no_grad():
            out = model(x)
        y = (
            torch.randint(out.shape[-1], (spec.batch_size,), device=device)
            if task.is_classification(cfg["dataset"])
            else torch.randn_like(out)
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg["client_cpus"])))
    try:
        curvature.hvp(model, loss_fn, (x, y), torch.ones(curvature.parameter_layout(model).size, device=device))
        start = time.perf_counter()
        algorithms.local_update(
            model,
            loss_fn,
            x,
            y,
            algorithms.LocalSpec(**{**spec.__dict__, "local_steps": 1}),
            torch.Generator().manual_seed(0),
        )
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def round_estimate(cfg: Mapping[str, Any], step_s: float) -> float:
    """A training round's seconds from one local step's: the round's clients (``fraction`` of ``num_clients``) in
    waves of as many as compute at once (:func:`perfedavg.task.concurrent_clients`), ``local_steps`` steps each."""
    waves = math.ceil(clients_per_round(cfg["num_clients"], cfg["fraction"]) / task.concurrent_clients(cfg))
    return waves * cfg["local_steps"] * step_s


def slow_round_line(cfg: Mapping[str, Any], step_s: float, rounds_left: int) -> str | None:
    """The line said before a slow run's first round, or ``None`` when a round is estimated under
    :data:`SLOW_ROUND_S`."""
    from perfedavg.federation.console import format_duration

    per_round = round_estimate(cfg, step_s)
    if per_round < SLOW_ROUND_S:
        return None
    clients = clients_per_round(cfg["num_clients"], cfg["fraction"])
    return (
        f"hessian={cfg['hessian']['mode']}: one local step takes {step_s:.1f} s here (measured once before round 1); "
        f"a round of {clients} clients × {cfg['local_steps']} steps, {task.concurrent_clients(cfg)} at a time, "
        f"≈ {format_duration(per_round)}"
        + (f"; {rounds_left} rounds ≈ {format_duration(per_round * rounds_left)}" if rounds_left > 1 else "")
    )


def timeout_warning(cfg: Mapping[str, Any], step_s: float) -> str | None:
    """A warning when ``round_timeout_s`` is under twice the time it must allow by the estimate (a whole round under
    Ray; one client in-process, where the limit is per client): clients would be cut off as timed out."""
    from perfedavg.federation.console import format_duration

    limit = cfg.get("round_timeout_s")
    inprocess = cfg.get("backend") == "inprocess"
    needed = cfg["local_steps"] * step_s if inprocess else round_estimate(cfg, step_s)
    if limit is None or needed * 2 <= limit:
        return None
    what = "one client's local steps (in-process the limit is per client)" if inprocess else "a round"
    suggested = int(math.ceil(needed * 4 / 60) * 60)
    return (
        f"round_timeout_s={limit:g}: {what} is estimated at ≈ {format_duration(needed)} here, so clients may be cut "
        f"off as timed out; raise it (e.g. round_timeout_s={suggested}) or set round_timeout_s=null"
    )
