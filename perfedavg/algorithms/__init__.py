"""The federated algorithms, one module each (pure torch; no Flower), behind one interface
(:class:`~perfedavg.algorithms.base.Algorithm`): FedAvg and its fine-tuned and compute-matched baselines
(:mod:`~perfedavg.algorithms.fedavg`), Per-FedAvg (:mod:`~perfedavg.algorithms.per_fedavg`), pFedMe
(:mod:`~perfedavg.algorithms.pfedme`; Dinh, Tran, Nguyen, NeurIPS 2020) and Ditto (:mod:`~perfedavg.algorithms.ditto`;
Li, Hu, Beirami, Smith, ICML 2021).

Adding a method: a module with an :class:`~perfedavg.algorithms.base.Algorithm` subclass, an entry in
:data:`ALGORITHMS`, its name in :class:`perfedavg.config.AlgorithmName` and a ``conf/algorithm/<name>.yaml``; the
federation loop and the ClientApp stay as they are.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from perfedavg.algorithms.base import (
    Algorithm,
    LocalResult,
    LocalSpec,
    evaluate,
    personalize,
    personalized_evaluation,
    sample_batch,
)
from perfedavg.algorithms.ditto import Ditto
from perfedavg.algorithms.fedavg import FedAvg, FedAvgFineTuned, FedAvgMatched
from perfedavg.algorithms.per_fedavg import PerFedAvg
from perfedavg.algorithms.pfedme import PFedMe
from perfedavg.curvature import LossFn

#: Every algorithm by its run-config name (``algorithm=…``).
ALGORITHMS: dict[str, Algorithm] = {
    a.name: a for a in (PerFedAvg(), FedAvg(), PFedMe(), Ditto(), FedAvgFineTuned(), FedAvgMatched())
}

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "LocalResult",
    "LocalSpec",
    "evaluate",
    "get",
    "local_update",
    "personalize",
    "personalized_evaluation",
    "sample_batch",
]


def get(name: str) -> Algorithm:
    """The algorithm called ``name``; a ValueError naming the allowed ones otherwise."""
    if name not in ALGORITHMS:
        raise ValueError(f"algorithm {name!r} is not one of: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def local_update(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    spec: LocalSpec,
    generator: torch.Generator,
    *,
    diagnose: bool = False,
    state: Tensor | None = None,
) -> LocalResult:
    """``spec.algorithm``'s local update (:meth:`Algorithm.local_update`); a stateful algorithm without ``state``
    starts from the model's current weights as its state."""
    algorithm = get(spec.algorithm)
    if algorithm.stateful and state is None:
        from perfedavg import curvature

        state = algorithm.initial_state(curvature.flat_parameters(model))
    return algorithm.local_update(model, loss_fn, x, y, spec, generator, state=state, diagnose=diagnose)
