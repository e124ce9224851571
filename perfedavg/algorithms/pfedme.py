"""pFedMe: personalization through Moreau envelopes (Dinh, Tran, Nguyen, NeurIPS 2020, Algorithm 1).

Each client keeps a local model w and, per local step, a personalized model θ that approximately solves the
Moreau-envelope subproblem on a minibatch D:

    θ̂(w) ≈ argmin_θ  f(θ; D) + λ/2 ‖θ − w‖²      (K gradient steps of size η_p, from θ = w)
    w ← w − η λ (w − θ̂(w))                        (the local model moves toward θ̂)

After R such steps the server mixes: w_global ← (1 − β) w_global + β · mean_i w_i. The personalized model a client
is evaluated with is θ̂ of the current global model on its own training data. Every function works on flat
parameter vectors ``[P]`` (the layout of :func:`perfedavg.curvature.parameter_layout`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from perfedavg import curvature
from perfedavg.algorithm import sample_batch
from perfedavg.curvature import Batch, LossFn

#: ``(batch, at=w) -> (loss, gradient [P])``: a model's loss and gradient at flat parameters ``w``.
LossAndGradient = Callable[..., tuple[Tensor, Tensor]]


def moreau_point(
    loss_and_gradient: LossAndGradient, batch: Batch, anchor: Tensor, lam: float, eta_p: float, inner_steps: int
) -> Tensor:
    """θ̂ ≈ argmin_θ f(θ; batch) + λ/2 ‖θ − anchor‖² by ``inner_steps`` gradient steps of size ``eta_p`` from
    ``anchor``. For a convex f with an L-Lipschitz gradient, ``eta_p ≤ 1/(L + λ)`` converges to the exact minimizer
    (tested against the closed form on a quadratic). Cost: ``inner_steps`` gradients on ``batch``."""
    theta = anchor.clone()
    for _ in range(inner_steps):
        grad = loss_and_gradient(batch, at=theta)[1]
        theta = theta - eta_p * (grad + lam * (theta - anchor))
    return theta


def local_update(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    *,
    lam: float,
    eta_p: float,
    inner_steps: int,
    eta: float,
    local_steps: int,
    batch_size: int,
    generator: torch.Generator,
) -> tuple[Tensor, float]:
    """``local_steps`` pFedMe steps from the model's parameters: the local model ``[P]`` the client sends, and the
    mean minibatch loss at the personalized points. The model's parameters end at the returned weights.
    Cost: ``local_steps × inner_steps`` gradients."""
    grad_fn = _loss_and_gradient(model, loss_fn)
    w = curvature.flat_parameters(model)
    losses = []
    for _ in range(local_steps):
        batch = sample_batch(x, y, batch_size, generator)
        theta = moreau_point(grad_fn, batch, w, lam, eta_p, inner_steps)
        losses.append(float(grad_fn(batch, at=theta)[0]))
        w = w - eta * lam * (w - theta)
    curvature.set_flat_parameters(model, w)
    return w, sum(losses) / max(1, len(losses))


def server_mix(global_weights: Tensor, mean_local: Tensor, beta: float) -> Tensor:
    """The server's step: ``(1 − β) w_global + β · mean_i w_i`` (β = 1 is FedAvg's plain average)."""
    return (1.0 - beta) * global_weights + beta * mean_local


def personalized_weights(
    model: nn.Module, loss_fn: LossFn, x_train: Tensor, y_train: Tensor, *, lam: float, eta_p: float, inner_steps: int
) -> Tensor:
    """θ̂ of the model's current (global) parameters on the client's whole training split: the model pFedMe
    evaluates for that client. The model is left unchanged. Cost: ``inner_steps`` gradients on the split."""
    w = curvature.flat_parameters(model)
    return moreau_point(_loss_and_gradient(model, loss_fn), (x_train, y_train), w, lam, eta_p, inner_steps)


def _loss_and_gradient(model: nn.Module, loss_fn: LossFn) -> LossAndGradient:
    return lambda batch, at: curvature.loss_and_gradient(model, loss_fn, batch, at=at)
