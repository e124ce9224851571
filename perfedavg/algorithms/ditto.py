"""Ditto: a personal model per client, regularized toward the global one (Li, Hu, Beirami, Smith, ICML 2021).

The global model w is trained as in FedAvg. Each client also keeps a personal model v **across rounds** and, in
every round it is sampled, takes ``steps`` steps on

    min_v  f(v; D) + λ/2 ‖v − w‖²

as proximal gradient steps, v ← (v − η ∇f(v; D) + η λ w) / (1 + η λ): the paper's explicit step
v ← v − η (∇f(v; D) + λ (v − w)) to first order in ηλ, and stable for every λ (the explicit step diverges once
ηλ > 2). λ = 0 is local training alone; as λ → ∞, v is the global model. The personal model is the one evaluated.
State per client: one vector of P floats (4·P bytes in float32). Every function works on flat vectors ``[P]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from perfedavg import curvature
from perfedavg.algorithm import sample_batch
from perfedavg.curvature import LossFn


def personal_step(v: Tensor, gradient: Tensor, global_weights: Tensor, lam: float, eta: float) -> Tensor:
    """One proximal step of the personal objective: ``(v − η ∇f(v) + η λ w) / (1 + η λ)``."""
    return (v - eta * gradient + (eta * lam) * global_weights) / (1.0 + eta * lam)


def personal_update(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    personal: Tensor,
    global_weights: Tensor,
    *,
    lam: float,
    eta: float,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[Tensor, float]:
    """``steps`` personal steps from ``personal`` toward the objective above: the new personal model ``[P]`` and the
    mean minibatch loss before each step. The model's parameters are left as they were. Cost: ``steps``
    gradients."""
    before = curvature.flat_parameters(model)
    v = personal.clone()
    losses = []
    try:
        for _ in range(steps):
            batch = sample_batch(x, y, batch_size, generator)
            loss, grad = curvature.loss_and_gradient(model, loss_fn, batch, at=v)
            losses.append(float(loss))
            v = personal_step(v, grad, global_weights, lam, eta)
    finally:
        curvature.set_flat_parameters(model, before)
    return v, sum(losses) / max(1, len(losses))


def state_bytes(num_parameters: int, element_size: int = 4) -> int:
    """Memory of one client's Ditto state: its personal model (``num_parameters`` elements)."""
    return num_parameters * element_size
