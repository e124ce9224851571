"""Ditto: a personal model per client, regularized toward the global one (Li, Hu, Beirami, Smith, ICML 2021).

The global model w is trained as in FedAvg. Each client also keeps a personal model v **across rounds** and, in
every round it is sampled, takes ``steps`` steps on

    min_v  f(v; D) + λ/2 ‖v − w‖²

as proximal gradient steps, v ← (v − η ∇f(v; D) + η λ w) / (1 + η λ): the paper's explicit step
v ← v − η (∇f(v; D) + λ (v − w)) to first order in ηλ, and stable for every λ (the explicit step diverges once
ηλ > 2). λ = 0 is local training alone; as λ → ∞, v is the global model. The personal model is the one evaluated;
before a client's first round it is the run's initial model (the paper's v⁰ = w⁰).
Run-config keys: λ = ``algorithm.lam``, η = ``alpha`` (the personal step size), the global model's local SGD step
``beta``, ``local_steps`` steps of each per round on minibatches of ``batch_size``.
State per client: one vector of P floats (4·P bytes in float32). Every function works on flat vectors ``[P]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from perfedavg.algorithms.base import (
    LocalResult,
    LocalSpec,
    OwnModelAlgorithm,
    loss_and_gradient_of,
    sample_batch,
)
from perfedavg.algorithms.declaration import Declaration, Key, Search
from perfedavg.algorithms.fedavg import sgd
from perfedavg.lazy_import import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from perfedavg import curvature
    from perfedavg.curvature import LossFn
else:  # loaded on first use (perfedavg.lazy_import)
    curvature = lazy_import("perfedavg.curvature")


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
    loss_and_gradient, _ = loss_and_gradient_of(model, loss_fn)
    v = personal.clone()
    losses = []
    try:
        for _ in range(steps):
            batch = sample_batch(x, y, batch_size, generator)
            loss, grad = loss_and_gradient(batch, at=v)
            losses.append(float(loss))
            v = personal_step(v, grad, global_weights, lam, eta)
    finally:
        curvature.set_flat_parameters(model, before)
    return v, sum(losses) / max(1, len(losses))


class Ditto(OwnModelAlgorithm):
    """Ditto as the module above defines it: FedAvg's local SGD for the global model, then the personal steps; the
    personal model is the client's state across rounds."""

    declaration: ClassVar[Declaration] = Declaration(
        name="ditto",
        title="Ditto",
        keys=(
            Key("lam", 0.1, "0: local training alone; larger: closer to global", strict=False,
                search=Search(0.01, 30, log=True), symbol="λ"),
        ),
        stateful=True,
        reference="Li, Hu, Beirami, Smith, ICML 2021",
        order=40,
    )  # fmt: skip

    def unsampled_state(self, initial_weights: Tensor, global_weights: Tensor) -> Tensor | None:
        """A client never sampled has no personal model yet: it is evaluated with the current global model (what a
        device that has not taken part would be served). Its training, once sampled, starts from the run's initial
        model as in Ditto's Algorithm 1 (:meth:`initial_state`); docs/algorithms.md."""
        return global_weights.clone()

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
        """``train_loss``: the global model's mean f(w; D) before each step (FedAvg's). Cost: 2 × ``local_steps``
        gradients."""
        if state is None:
            raise ValueError("ditto: a client's local update needs its personal model (state)")
        w0 = curvature.flat_parameters(model)
        w, loss = sgd(model, loss_fn, x, y, w0, spec.beta, spec, generator)
        v, _ = personal_update(  # pulled toward the global model received, w0
            model, loss_fn, x, y, state, w0, lam=self.option(spec, "lam"), eta=spec.alpha, steps=spec.local_steps,
            batch_size=spec.batch_size, generator=generator,
        )  # fmt: skip
        curvature.set_flat_parameters(model, w)
        return LocalResult(
            weights=w,
            train_loss=loss,
            curvature_s=0.0,
            num_examples=len(x),
            state=v,
        )
