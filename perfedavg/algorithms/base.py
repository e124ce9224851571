"""What every federated algorithm shares: the local-update spec and result, minibatch sampling, evaluation, and the
interface each algorithm implements (pure torch; no Flower).

An :class:`Algorithm` says three things, and the federation loop (:mod:`perfedavg.federation.loop`) and the ClientApp
(:mod:`perfedavg.engines.client_app`) ask nothing else of it:

* :meth:`Algorithm.local_update`: what a sampled client does with the global weights in a round (the weights it
  sends back, and for a stateful algorithm its new per-client state);
* :meth:`Algorithm.server_update`: how the server turns the clients' averaged weights into the next global model;
* :meth:`Algorithm.evaluate`: how a client personalizes before it is evaluated (global and personalized metrics).

Weights travel as flat vectors ``[P]`` (:func:`perfedavg.curvature.flat_parameters`) inside the algorithms and as
state dicts between server and clients. A stateful algorithm (:attr:`Algorithm.stateful`, e.g. Ditto's personal
model) keeps one flat vector ``[P]`` per client across rounds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from perfedavg.algorithms.declaration import Declaration
from perfedavg.lazy_import import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from perfedavg import curvature
    from perfedavg.curvature import Batch, LossFn, Weights
else:  # imported on first use: a declaration is read without PyTorch (perfedavg.lazy_import); torch itself is
    # imported in the functions that name it
    curvature = lazy_import("perfedavg.curvature")

#: ``(batch, at=w) -> (loss, gradient [P])``: a model's minibatch loss and its gradient at flat parameters ``w``.
LossAndGradient = Callable[..., "tuple[Tensor, Tensor]"]


@dataclass(frozen=True)
class LocalSpec:
    """What one client does with the global model in a round (the run config's keys, see conf/config.yaml).

    α and β keep one meaning across algorithms: α is the *personal* step size (Per-FedAvg's inner step, FedAvg's
    fine-tuning step before evaluation, pFedMe's η_p in the Moreau subproblem, Ditto's personal-model step) and β the
    step size of the model the server averages (Per-FedAvg's meta step, local SGD's step in FedAvg and Ditto,
    pFedMe's η)."""

    algorithm: str = "perfedavg"
    hessian: str = "hvp"
    alpha: float = 0.01
    beta: float = 0.05
    delta: float = 1e-3
    local_steps: int = 5
    batch_size: int = 16
    max_memory_gb: float | None = None
    adapt_steps: int = 1  # the base class's personalization: α-steps on the training split before evaluation
    adapt_batch: int | None = None  # those steps' gradient over at most this many training examples (None: all)
    #: The algorithm's own keys (``algorithm.*``, its :class:`~perfedavg.algorithms.declaration.Declaration`'s),
    #: e.g. ``{"lam": 0.5}`` for Ditto; a key left out takes its declared default (:meth:`Algorithm.option`).
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))


@dataclass(frozen=True)
class LocalResult:
    """A client's updated weights (flat ``[P]``) and what it measured on the way."""

    weights: Tensor
    train_loss: float  # mean over local steps of the minibatch loss the algorithm reports (see each algorithm)
    curvature_s: float  # of which spent in the curvature correction (0 for fo and the other algorithms)
    num_examples: int  # size of the client's training split
    diagnostics: dict[str, float] = field(default_factory=dict)  # at the first meta-step, when asked for
    diagnostics_s: float = 0.0  # of compute_s, spent on the diagnostics
    state: Tensor | None = None  # a stateful algorithm's new per-client state ``[P]`` (None otherwise)


def sample_batch(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> Batch:
    """A minibatch of ``min(batch_size, n)`` distinct examples drawn uniformly with ``generator``."""
    import torch

    n = int(x.shape[0])
    idx = torch.randperm(n, generator=generator)[: min(batch_size, n)].to(x.device)
    return x.index_select(0, idx), y.index_select(0, idx)  # = x[idx], y[idx]; a plain gather is cheaper


def loss_and_gradient_of(model: nn.Module, loss_fn: LossFn) -> tuple[LossAndGradient, curvature.ScratchModel | None]:
    """The fastest :data:`LossAndGradient` for ``model``: in the model itself where
    :class:`~perfedavg.curvature.ScratchModel` supports it (no buffers), else functionally; and that scratch model."""
    scratch = curvature.ScratchModel(model, loss_fn) if curvature.ScratchModel.supports(model) else None
    if scratch is not None:
        return scratch.loss_and_gradient, scratch
    return (lambda batch, at: curvature.loss_and_gradient(model, loss_fn, batch, at=at)), None


def evaluate(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, classification: bool) -> dict[str, float]:
    """``{"loss": mean loss, "acc": accuracy}`` on ``(x, y)`` (``acc`` only for classification), in eval mode."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
        metrics = {"loss": float(loss_fn(out, y))}
        if classification:
            metrics["acc"] = float((out.argmax(dim=1) == y).float().mean())
        return metrics
    finally:
        model.train(was_training)


def global_and_personal(
    model: nn.Module,
    loss_fn: LossFn,
    personal: Tensor,
    x_eval: Tensor,
    y_eval: Tensor,
    classification: bool,
) -> dict[str, float]:
    """``global_*`` metrics of the model's (global) parameters and ``personalized_*`` of the flat weights
    ``personal`` on ``(x_eval, y_eval)``; the model's parameters are restored afterwards. Cost: two forward passes."""
    before = evaluate(model, loss_fn, x_eval, y_eval, classification)
    w0 = curvature.flat_parameters(model)
    try:
        curvature.set_flat_parameters(model, personal)
        after = evaluate(model, loss_fn, x_eval, y_eval, classification)
    finally:
        curvature.set_flat_parameters(model, w0)
    return {**{f"global_{k}": v for k, v in before.items()}, **{f"personalized_{k}": v for k, v in after.items()}}


def personalize(
    model: nn.Module, loss_fn: LossFn, x_train: Tensor, y_train: Tensor, alpha: float, adapt_steps: int = 1
) -> nn.Module:
    """A copy of ``model`` after ``adapt_steps`` gradient steps of size α on the client's whole training split.

    This is Per-FedAvg's personalization w − α∇f_i(w), with f_i the client's training loss (FedAvg's fine-tuning).
    Never touches the test split. Cost: ``adapt_steps`` gradients on the training split.
    """
    adapted = copy.deepcopy(model)
    w = curvature.flat_parameters(adapted)
    for _ in range(adapt_steps):
        w = w - alpha * curvature.gradient(adapted, loss_fn, (x_train, y_train), at=w)
    curvature.set_flat_parameters(adapted, w)
    return adapted


def spread_subset(x: Tensor, y: Tensor, n: int | None) -> tuple[Tensor, Tensor]:
    """At most ``n`` of the examples ``x`` ``[N, …]``, ``y`` ``[N, …]``, evenly spaced over their order (indices
    ⌊i·N/n⌋, i < n: the same every call, no randomness); all of them where ``n`` is None or ≥ N. For a text client
    (windows in text order) the subset spans the whole training part."""
    import torch

    total = int(y.shape[0])
    if n is None or n >= total:
        return x, y
    index = torch.arange(n, device=y.device) * total // n
    return x[index], y[index]


def personalized_evaluation(
    model: nn.Module,
    loss_fn: LossFn,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    y_test: Tensor,
    *,
    alpha: float,
    adapt_steps: int,
    classification: bool,
    adapt_batch: int | None = None,
) -> dict[str, float]:
    """Test metrics of the global model and of its copy after ``adapt_steps`` α-steps on the training split (on
    :func:`spread_subset`'s ``adapt_batch`` of its examples where that is set): ``global_loss``,
    ``personalized_loss`` (and ``global_acc``, ``personalized_acc`` for classification). The global model is left
    unchanged. Cost: two forward passes over the test split and ``adapt_steps`` gradients over the (sub)set.

    Models without buffers are personalized in place (the adapted weights are loaded, evaluated, and the global
    ones restored; same arithmetic as :func:`personalize`, without its deep copy); others through a copy."""
    x_train, y_train = spread_subset(x_train, y_train, adapt_batch)
    before = evaluate(model, loss_fn, x_test, y_test, classification)
    if not curvature.ScratchModel.supports(model):
        adapted = personalize(model, loss_fn, x_train, y_train, alpha, adapt_steps)
        after = evaluate(adapted, loss_fn, x_test, y_test, classification)
    else:
        scratch = curvature.ScratchModel(model, loss_fn)
        w0 = curvature.flat_parameters(model)
        w = w0
        try:
            for _ in range(adapt_steps):
                w = w - alpha * scratch.loss_and_gradient((x_train, y_train), at=w)[1]
            scratch.load(w)
            after = evaluate(model, loss_fn, x_test, y_test, classification)
        finally:
            scratch.load(w0)
    return {**{f"global_{k}": v for k, v in before.items()}, **{f"personalized_{k}": v for k, v in after.items()}}


class Algorithm:
    """One federated algorithm: a client's local update, the server's update, and personalize-then-evaluate.

    Subclasses set :attr:`declaration` (what the rest of the program needs to know:
    :class:`~perfedavg.algorithms.declaration.Declaration`) and implement :meth:`local_update`; the defaults are
    FedAvg's server (the average is the next global model) and the α-step personalization before evaluation (which
    reads ``adapt_steps``: :meth:`reads`). A *stateful* algorithm keeps one flat vector ``[P]`` per client across
    rounds: it receives it as ``state`` (:meth:`initial_state` the first time) and returns the new one in
    :attr:`LocalResult.state`; the federation stores it in Flower's ``Context.state`` and in its checkpoints."""

    declaration: ClassVar[Declaration]

    @property
    def name(self) -> str:
        return self.declaration.name

    @property
    def stateful(self) -> bool:
        return self.declaration.stateful

    @classmethod
    def reads(cls) -> frozenset[str]:
        """The algorithm-dependent shared keys it reads (:data:`~perfedavg.algorithms.declaration.
        ALGORITHM_DEPENDENT_KEYS`): its declaration's, ``adapt_steps`` and ``adapt_batch`` where it keeps the base
        class's :meth:`evaluate`, and ``delta`` where it uses the Hessian mode (read with ``hessian=fd``)."""
        implied = {"adapt_steps", "adapt_batch"} if cls.evaluate is Algorithm.evaluate else set()
        implied |= {"delta"} if cls.declaration.uses_hessian else set()
        return frozenset(cls.declaration.reads | implied)

    def option(self, spec: LocalSpec, key: str) -> Any:
        """The value of its key ``algorithm.<key>`` in ``spec`` (its declared default where ``spec`` has none)."""
        if key in spec.options:
            return spec.options[key]
        declared = self.declaration.key(key)
        if declared is None:
            raise KeyError(f"algorithm {self.name} declares no key {key!r}")
        return declared.default

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
        """``spec.local_steps`` local steps from the model's current parameters; the model's parameters hold the
        returned weights afterwards."""
        raise NotImplementedError

    def server_update(self, previous: Weights, averaged: Weights, spec: LocalSpec) -> Weights:
        """The next global model from the previous one and the average of the clients' weights (FedAvg: the
        average)."""
        return averaged

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
        """``global_*`` and ``personalized_*`` metrics on ``held_out`` of the model's (global) weights and of the
        client's personalized model; the default personalizes with ``spec.adapt_steps`` α-steps on ``train`` (on
        ``spec.adapt_batch`` of its examples where that is set)."""
        return personalized_evaluation(
            model,
            loss_fn,
            *train,
            *held_out,
            alpha=spec.alpha,
            adapt_steps=spec.adapt_steps,
            classification=classification,
            adapt_batch=spec.adapt_batch,
        )

    def initial_state(self, initial_weights: Tensor) -> Tensor | None:
        """A client's state before its first round (stateful algorithms), from the run's initial model ``[P]``."""
        return None

    def unsampled_state(self, initial_weights: Tensor, global_weights: Tensor) -> Tensor | None:
        """The state a client that has never trained is *evaluated* with, from the run's initial model and the
        current global model (both ``[P]``); by default its :meth:`initial_state`."""
        return self.initial_state(initial_weights)


class OwnModelAlgorithm(Algorithm):
    """An algorithm whose per-client state is the client's own model (Ditto's personal model, Local's model): that
    model is the one evaluated as personalized, and before the client's first round it is the run's initial model.
    Subclasses declare ``stateful=True`` and implement :meth:`local_update`."""

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
        """The global model, and the client's own model (its state)."""
        if state is None:
            raise ValueError(f"{self.name}: evaluating a client needs its own model (state)")
        return global_and_personal(model, loss_fn, state, *held_out, classification)

    def initial_state(self, initial_weights: Tensor) -> Tensor | None:
        return initial_weights.clone()
