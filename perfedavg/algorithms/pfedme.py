"""pFedMe: personalization through Moreau envelopes (Dinh, Tran, Nguyen, NeurIPS 2020, Algorithm 1).

Each client keeps a local model w and, per local step, a personalized model θ that approximately solves the
Moreau-envelope subproblem on a minibatch D:

    θ̂(w) ≈ argmin_θ  f(θ; D) + λ/2 ‖θ − w‖²      (K gradient steps of size η_p, from θ = w)
    w ← w − η λ (w − θ̂(w))                        (the local model moves toward θ̂)

After R such steps the server mixes: w_global ← (1 − β) w_global + β · mean_i w_i. The personalized model a client
is evaluated with is θ̂ of the current global model on its own training data.
Run-config keys: λ = ``algorithm.lam``, K = ``algorithm.inner_steps``, the server's β = ``algorithm.server_mix``,
η_p = ``alpha`` (the personal step size), η = ``beta``, R = ``local_steps``, |D| = ``batch_size``.
Every function works on flat parameter vectors ``[P]`` (the layout of :func:`perfedavg.curvature.parameter_layout`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from perfedavg.algorithms.base import (
    Algorithm,
    LocalResult,
    LocalSpec,
    LossAndGradient,
    global_and_personal,
    loss_and_gradient_of,
    sample_batch,
)
from perfedavg.algorithms.declaration import Declaration, Key, Search
from perfedavg.lazy_import import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from perfedavg import curvature
    from perfedavg.curvature import Batch, LossFn, Weights
else:  # loaded on first use (perfedavg.lazy_import)
    curvature = lazy_import("perfedavg.curvature")


def moreau_point(
    loss_and_gradient: LossAndGradient, batch: Batch, anchor: Tensor, lam: float, eta_p: float, inner_steps: int
) -> tuple[Tensor, float]:
    """θ̂ ≈ argmin_θ f(θ; batch) + λ/2 ‖θ − anchor‖² by ``inner_steps`` gradient steps of size ``eta_p`` from
    ``anchor``, and f(anchor; batch) (the first step's loss, free). For a convex f with an L-Lipschitz gradient,
    ``eta_p ≤ 1/(L + λ)`` converges to the exact minimizer (tested against the closed form on a quadratic).
    Cost: ``inner_steps`` gradients on ``batch``."""
    theta = anchor.clone()
    first = float("nan")
    for k in range(inner_steps):
        loss, grad = loss_and_gradient(batch, at=theta)
        if k == 0:
            first = float(loss)
        theta = theta - eta_p * (grad + lam * (theta - anchor))
    return theta, first


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
    mean of f(w; D) at the local model before each step. The model's parameters end at the returned weights.
    Cost: ``local_steps × inner_steps`` gradients."""
    grad_fn, _ = loss_and_gradient_of(model, loss_fn)
    w = curvature.flat_parameters(model)
    losses = []
    for _ in range(local_steps):
        batch = sample_batch(x, y, batch_size, generator)
        theta, loss = moreau_point(grad_fn, batch, w, lam, eta_p, inner_steps)
        losses.append(loss)
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
    evaluates for that client. The model's parameters are left as they were. Cost: ``inner_steps`` gradients on the
    split."""
    w = curvature.flat_parameters(model)
    grad_fn, _ = loss_and_gradient_of(model, loss_fn)
    try:
        return moreau_point(grad_fn, (x_train, y_train), w, lam, eta_p, inner_steps)[0]
    finally:
        curvature.set_flat_parameters(model, w)


class PFedMe(Algorithm):
    """pFedMe as the module above defines it."""

    declaration: ClassVar[Declaration] = Declaration(
        name="pfedme",
        title="pFedMe",
        keys=(
            Key("lam", 15.0, "λ, the pull between the personal and the global model (the paper: 15 on MNIST)",
                search=Search(0.01, 30, log=True), symbol="λ"),
            Key("inner_steps", 5, "K, gradient steps on each Moreau subproblem (the paper: 5)", integer=True,
                search=Search(1, 10, integer=True), symbol="K"),
            Key("server_mix", 1.0, "the server's β: w ← (1 − β) w + β · mean of the clients' (1: the average)",
                symbol="β_s"),
        ),
        reference="Dinh, Tran, Nguyen, NeurIPS 2020",
        order=30,
    )  # fmt: skip

    def local_update(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        x: Tensor,
        y: Tensor,
        spec: LocalSpec,
        generator: torch.Generator,
        *,
        state: Tensor | None = None,
        diagnose: bool = False,
    ) -> LocalResult:
        w, loss = local_update(
            model,
            loss_fn,
            x,
            y,
            lam=self.option(spec, "lam"),
            eta_p=spec.alpha,
            inner_steps=self.option(spec, "inner_steps"),
            eta=spec.beta,
            local_steps=spec.local_steps,
            batch_size=spec.batch_size,
            generator=generator,
        )
        return LocalResult(weights=w, train_loss=loss, curvature_s=0.0, num_examples=len(x))

    def server_update(self, previous: Weights, averaged: Weights, spec: LocalSpec) -> Weights:
        """``(1 − β) w_global + β · mean_i w_i`` per tensor, β = ``algorithm.server_mix`` (float64 sums, as the
        average)."""
        import torch

        beta = self.option(spec, "server_mix")
        if beta == 1.0:
            return averaged
        return {
            name: server_mix(previous[name].to(torch.float64), averaged[name].to(torch.float64), beta).to(
                averaged[name].dtype
            )
            for name in averaged
        }

    def evaluate(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        train: Batch,
        held_out: Batch,
        spec: LocalSpec,
        *,
        classification: bool,
        state: Tensor | None = None,
    ) -> dict[str, float]:
        """The global model, and θ̂ of it on the client's training split (:func:`personalized_weights`)."""
        theta = personalized_weights(
            model,
            loss_fn,
            *train,
            lam=self.option(spec, "lam"),
            eta_p=spec.alpha,
            inner_steps=self.option(spec, "inner_steps"),
        )
        return global_and_personal(model, loss_fn, theta, *held_out, classification)
