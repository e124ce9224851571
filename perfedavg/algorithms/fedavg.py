"""FedAvg (McMahan et al. 2017): local SGD, ``w ← w − β ∇f(w; D)``, averaged by the server.

Personalization before evaluation is fine-tuning: ``adapt_steps`` steps of size α on the client's training split
(:func:`perfedavg.algorithms.base.personalized_evaluation`), the same one Per-FedAvg uses.
"""

from __future__ import annotations

import time
from typing import ClassVar

import torch
from torch import Tensor, nn

from perfedavg import curvature
from perfedavg.algorithms.base import Algorithm, LocalResult, LocalSpec, loss_and_gradient_of, sample_batch
from perfedavg.curvature import LossFn


class FedAvg(Algorithm):
    """Local SGD with step size β over ``local_steps`` minibatches of ``batch_size``. Cost: one gradient a step."""

    name: ClassVar[str] = "fedavg"

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
        """``train_loss``: the mean of f(w; D) before each step. FedAvg has no meta-step: ``diagnose`` measures
        nothing."""
        start = time.perf_counter()
        w, loss = sgd(model, loss_fn, x, y, curvature.flat_parameters(model), spec.beta, spec, generator)
        curvature.set_flat_parameters(model, w)
        return LocalResult(
            weights=w, train_loss=loss, compute_s=time.perf_counter() - start, curvature_s=0.0, num_examples=len(x)
        )


def sgd(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    w: Tensor,
    step: float,
    spec: LocalSpec,
    generator: torch.Generator,
) -> tuple[Tensor, float]:
    """``spec.local_steps`` SGD steps of size ``step`` from the flat weights ``w`` on minibatches of
    ``spec.batch_size``: the final weights ``[P]`` and the mean minibatch loss before each step. The model serves as
    scratch space (its parameters are left undefined)."""
    loss_and_gradient, _ = loss_and_gradient_of(model, loss_fn)
    losses = []
    for _ in range(spec.local_steps):
        loss, grad = loss_and_gradient(sample_batch(x, y, spec.batch_size, generator), at=w)
        losses.append(float(loss))
        w = w - step * grad
    return w, sum(losses) / max(1, len(losses))
