"""Local training: each client trains only its own model, kept across rounds; nothing is averaged.

The standard lower baseline of personalized federated learning (e.g. Ditto's and pFedMe's papers, FL-bench's
``local``): a method that federates should beat a client that never talks to the others. Each client's model starts
at the run's initial model and, in every round the client is sampled, takes ``local_steps`` SGD steps of size α (the
personal step size) on minibatches of ``batch_size`` from its training split. The server's model stays the initial
one: ``global_*`` metrics are those of the untrained model, ``personalized_*`` those of each client's own model (a
client never sampled is evaluated with the initial model, as it has trained nothing). β is not read.
State per client: one vector of P floats (4·P bytes in float32).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from perfedavg.algorithms.base import LocalResult, LocalSpec, OwnModelAlgorithm
from perfedavg.algorithms.declaration import STEP_SEARCH, Declaration
from perfedavg.algorithms.fedavg import sgd
from perfedavg.lazy_import import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from perfedavg import curvature
    from perfedavg.curvature import LossFn, Weights
else:  # loaded on first use (perfedavg.lazy_import)
    curvature = lazy_import("perfedavg.curvature")


class Local(OwnModelAlgorithm):
    """Local SGD on each client's own model (its state); the global model never moves. Cost: one gradient a step."""

    declaration: ClassVar[Declaration] = Declaration(
        name="local",
        title="Local",
        reads=frozenset({"alpha"}),
        stateful=True,
        search={"alpha": STEP_SEARCH},
        reference="each client alone: the lower baseline of personalized FL",
        order=50,
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
        """``train_loss``: the client's own model's mean f(v; D) before each step. The weights sent back are the
        global ones, unchanged; the new own model is the state."""
        if state is None:
            raise ValueError("local: a client's local update needs its own model (state)")
        w0 = curvature.flat_parameters(model)
        v, loss = sgd(model, loss_fn, x, y, state, spec.alpha, spec, generator)
        curvature.set_flat_parameters(model, w0)
        return LocalResult(weights=w0, train_loss=loss, curvature_s=0.0, num_examples=len(x), state=v)

    def server_update(self, previous: Weights, averaged: Weights, spec: LocalSpec) -> Weights:
        """Nothing is averaged: the global model stays as it was."""
        return previous
