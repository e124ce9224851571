"""FedAvg (McMahan et al. 2017): local SGD, ``w ← w − β ∇f(w; D)``, averaged by the server.

Personalization before evaluation is fine-tuning: ``adapt_steps`` steps of size α on the client's training split
(:func:`perfedavg.algorithms.base.personalized_evaluation`), the same one Per-FedAvg uses.

Two baselines that make a comparison with Per-FedAvg fair: :class:`FedAvgFineTuned`
(``algorithm=fedavg_ft``: FedAvg whose ``adapt_steps`` is tuned with its step sizes, not fixed at Per-FedAvg's one
step) and :class:`FedAvgMatched` (``algorithm=fedavg_matched``: each local step on 3 × ``batch_size`` examples, the
examples Per-FedAvg's three minibatches D, D′, D″ use per step).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

from perfedavg.algorithms.base import Algorithm, LocalResult, LocalSpec, loss_and_gradient_of, sample_batch
from perfedavg.algorithms.declaration import STEP_SEARCH, Declaration, Search
from perfedavg.lazy_import import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from perfedavg import curvature
    from perfedavg.curvature import LossFn
else:  # loaded on first use (perfedavg.lazy_import)
    curvature = lazy_import("perfedavg.curvature")


class FedAvg(Algorithm):
    """Local SGD with step size β over ``local_steps`` minibatches of ``batch_size``. Cost: one gradient a step."""

    declaration: ClassVar[Declaration] = Declaration(
        name="fedavg",
        title="FedAvg",
        reference="McMahan, Moore, Ramage, Hampson, Agüera y Arcas, AISTATS 2017",
        order=10,
    )

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
        w, loss = sgd(model, loss_fn, x, y, curvature.flat_parameters(model), spec.beta, spec, generator)
        curvature.set_flat_parameters(model, w)
        return LocalResult(weights=w, train_loss=loss, curvature_s=0.0, num_examples=len(x))


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


class FedAvgFineTuned(FedAvg):
    """FedAvg under its own name, so that its tuned ``adapt_steps`` (the tuner searches it) has its own entry
    in a tuned experiment's table and its own row in the reports; the local update is FedAvg's."""

    declaration: ClassVar[Declaration] = Declaration(
        name="fedavg_ft",
        title="FedAvg (fine-tuned)",
        search={"alpha": STEP_SEARCH, "beta": STEP_SEARCH, "adapt_steps": Search(1, 10, integer=True)},
        reference="FedAvg with fine-tuning steps tuned as a hyper-parameter (a baseline for Per-FedAvg)",
        order=11,
    )


#: Per-FedAvg draws three minibatches a step (D, D′, D″); the compute-matched FedAvg takes their examples at once.
MATCHED_BATCHES = 3


class FedAvgMatched(FedAvg):
    """FedAvg whose every local step uses :data:`MATCHED_BATCHES` × ``batch_size`` distinct examples: per round the
    examples Per-FedAvg's steps use, in one gradient each step (the gradient work of three minibatch gradients)."""

    declaration: ClassVar[Declaration] = Declaration(
        name="fedavg_matched",
        title="FedAvg (compute-matched)",
        reference="FedAvg on Per-FedAvg's examples per step (a baseline for Per-FedAvg)",
        order=12,
    )

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
        matched = replace(spec, batch_size=MATCHED_BATCHES * spec.batch_size)
        return super().local_update(model, loss_fn, x, y, matched, generator, state=state, diagnose=diagnose)
