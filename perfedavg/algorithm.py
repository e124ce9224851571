"""Per-FedAvg and FedAvg local updates, and personalize-then-evaluate (pure torch; no Flower).

Notation (Fallah, Mokhtari, Ozdaglar 2020): f is a client's minibatch loss, α the inner (personalization) step,
β the outer (meta) step. One Per-FedAvg local step draws three independent minibatches D, D′, D″ and does

    w̃ = w − α ∇f(w; D)             (a temporary personalized model)
    g = ∇f(w̃; D′)                  (the gradient there)
    w ← w − β (I − α ∇²f(w; D″)) g  (the second-order meta-update; see :func:`perfedavg.curvature.correction`)

The Hessian term is selected by ``hessian`` (exact, hvp, fd, diag, fo). FedAvg's local step is plain SGD,
``w ← w − β ∇f(w; D)``.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from perfedavg import curvature, diagnostics
from perfedavg.curvature import Batch, LossFn

ALGORITHMS: tuple[str, ...] = ("perfedavg", "fedavg")


@dataclass(frozen=True)
class LocalSpec:
    """What one client does with the global model in a round."""

    algorithm: str = "perfedavg"
    hessian: str = "hvp"
    alpha: float = 0.01
    beta: float = 0.05
    delta: float = 1e-3
    local_steps: int = 5
    batch_size: int = 16
    max_memory_gb: float | None = None


@dataclass(frozen=True)
class LocalResult:
    """A client's updated weights (flat ``[P]``) and what it measured on the way."""

    weights: Tensor
    train_loss: float  # mean over local steps of f(w; D) before each step
    compute_s: float  # wall time of the whole local update
    curvature_s: float  # of which spent in the curvature correction (0 for fo and FedAvg)
    num_examples: int  # size of the client's training split
    diagnostics: dict[str, float] = field(default_factory=dict)  # at the first meta-step, when asked for
    diagnostics_s: float = 0.0  # of compute_s, spent on the diagnostics


def sample_batch(x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator) -> Batch:
    """A minibatch of ``min(batch_size, n)`` distinct examples drawn uniformly with ``generator``."""
    n = int(x.shape[0])
    idx = torch.randperm(n, generator=generator)[: min(batch_size, n)].to(x.device)
    return x.index_select(0, idx), y.index_select(0, idx)  # = x[idx], y[idx]; a plain gather is cheaper


def local_update(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    spec: LocalSpec,
    generator: torch.Generator,
    *,
    diagnose: bool = False,
) -> LocalResult:
    """Run ``spec.local_steps`` local steps from the model's current parameters; return the new flat weights.

    The model's parameters are used as scratch space and hold the final weights afterwards.
    Cost per Per-FedAvg step: 2 gradients + one correction (hvp ≈ 2 gradients, fd 2, diag ~3, exact ~P HVPs;
    measured in README "Curvature modes").
    ``diagnose`` (Per-FedAvg only): also measure :func:`perfedavg.diagnostics.meta_step_diagnostics` at the first
    meta-step (its D″, g and w), into ``LocalResult.diagnostics``; the weights are the same bit for bit.
    """
    if spec.algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm {spec.algorithm!r} is not one of: {', '.join(ALGORITHMS)}")
    curvature.check_mode(spec.hessian)
    start = time.perf_counter()
    curvature_s = 0.0
    w = curvature.flat_parameters(model)
    # fo, hvp and fd run in the model itself (same arithmetic, less overhead); exact and diag through curvature.
    scratch = curvature.ScratchModel(model, loss_fn) if curvature.ScratchModel.supports(model) else None
    loss_and_gradient = scratch.loss_and_gradient if scratch is not None else _functional(model, loss_fn)
    losses = []
    found: dict[str, float] = {}
    diagnostics_s = 0.0
    for step in range(spec.local_steps):
        batch = sample_batch(x, y, spec.batch_size, generator)
        loss, grad = loss_and_gradient(batch, at=w)
        losses.append(float(loss))
        if spec.algorithm == "fedavg":
            w = w - spec.beta * grad
            continue
        batch_g = sample_batch(x, y, spec.batch_size, generator)
        batch_h = sample_batch(x, y, spec.batch_size, generator)
        g = loss_and_gradient(batch_g, at=w - spec.alpha * grad)[1]
        t = time.perf_counter()
        direction = _corrected(spec, model, loss_fn, scratch, batch_h, g, w)
        curvature_s += time.perf_counter() - t
        if diagnose and step == 0:
            t = time.perf_counter()
            found = diagnostics.meta_step_diagnostics(model, loss_fn, batch_h, g, w, spec.alpha, spec.delta)
            diagnostics_s = time.perf_counter() - t
        w = w - spec.beta * direction
    curvature.set_flat_parameters(model, w)
    return LocalResult(
        weights=w,
        train_loss=sum(losses) / max(1, len(losses)),
        compute_s=time.perf_counter() - start,
        curvature_s=curvature_s,
        num_examples=int(x.shape[0]),
        diagnostics=found,
        diagnostics_s=diagnostics_s,
    )


def _functional(model: nn.Module, loss_fn: LossFn) -> Callable[..., tuple[Tensor, Tensor]]:
    """:func:`perfedavg.curvature.loss_and_gradient` bound to ``model`` and ``loss_fn`` (ScratchModel's signature)."""
    return lambda batch, at: curvature.loss_and_gradient(model, loss_fn, batch, at=at)


def _corrected(
    spec: LocalSpec,
    model: nn.Module,
    loss_fn: LossFn,
    scratch: curvature.ScratchModel | None,
    batch: Batch,
    g: Tensor,
    w: Tensor,
) -> Tensor:
    """``(I − αH(w)) g`` for ``spec.hessian``: in the model (``scratch``) for fo, hvp and fd, else through
    :func:`perfedavg.curvature.correction` with the model set to ``w``. Same values either way."""
    if scratch is not None and spec.hessian == "fo":
        return g
    if scratch is not None and spec.hessian == "hvp":
        return g - spec.alpha * scratch.hvp(batch, g, at=w)
    if scratch is not None and spec.hessian == "fd":
        return g - spec.alpha * scratch.fd_hvp(batch, g, at=w, delta=spec.delta)
    curvature.set_flat_parameters(model, w)
    return curvature.correction(
        spec.hessian, model, loss_fn, batch, g, spec.alpha, spec.delta, max_memory_gb=spec.max_memory_gb
    )


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor, classification: bool) -> dict[str, float]:
    """``{"loss": mean loss, "acc": accuracy}`` on ``(x, y)`` (``acc`` only for classification), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        out = model(x)
        metrics = {"loss": float(loss_fn(out, y))}
        if classification:
            metrics["acc"] = float((out.argmax(dim=1) == y).float().mean())
        return metrics
    finally:
        model.train(was_training)


def personalize(
    model: nn.Module, loss_fn: LossFn, x_train: Tensor, y_train: Tensor, alpha: float, adapt_steps: int = 1
) -> nn.Module:
    """A copy of ``model`` after ``adapt_steps`` gradient steps of size α on the client's whole training split.

    This is Per-FedAvg's personalization w − α∇f_i(w), with f_i the client's training loss.
    Never touches the test split. Cost: ``adapt_steps`` gradients on the training split.
    """
    adapted = copy.deepcopy(model)
    w = curvature.flat_parameters(adapted)
    for _ in range(adapt_steps):
        w = w - alpha * curvature.gradient(adapted, loss_fn, (x_train, y_train), at=w)
    curvature.set_flat_parameters(adapted, w)
    return adapted


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
) -> dict[str, float]:
    """Test metrics of the global model and of its personalized copy: ``global_loss``, ``personalized_loss``
    (and ``global_acc``, ``personalized_acc`` for classification). The global model is left unchanged.

    Models without buffers are personalized in place (the adapted weights are loaded, evaluated, and the global
    ones restored; same arithmetic as :func:`personalize`, without its deep copy); others through a copy."""
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
