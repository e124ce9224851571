"""Loss, gradient and Hessian-vector products at the model's parameters or at a flat point: the exact product by
double backward (:func:`hvp`), the paper's finite difference (:func:`fd_hvp`), their in-model fast path
(:class:`ScratchModel`) and the matrix-free operator the eigensolver uses (:class:`HessianOperator`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torch.func import functional_call

from perfedavg.curvature.layout import (
    Batch,
    LossFn,
    ParameterLayout,
    check_vector,
    flat_parameters,
    parameter_layout,
    trainable_parameters,
)


def _loss(model: nn.Module, loss_fn: LossFn, batch: Batch, params: Mapping[str, Tensor]) -> Tensor:
    """``loss_fn(model(inputs; params), targets)`` without touching the module's state."""
    inputs, targets = batch
    state: dict[str, Tensor] = dict(params)
    # Clone buffers so a forward in train mode (e.g. BatchNorm running statistics) cannot mutate the model.
    state.update({name: b.clone() for name, b in model.named_buffers()})
    loss = loss_fn(functional_call(model, state, (inputs,)), targets)
    if loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
    return loss


def _live_params(model: nn.Module, layout: ParameterLayout) -> dict[str, Tensor]:
    named = dict(model.named_parameters())
    return {name: named[name] for name in layout.names}


def _as_leaves(layout: ParameterLayout, at: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
    leaves = [t.detach().requires_grad_(True) for t in layout.unflatten(at)]
    return leaves, dict(zip(layout.names, leaves))


def loss_and_gradient(
    model: nn.Module, loss_fn: LossFn, batch: Batch, at: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Loss and flat gradient ``∇f(w; batch)``, at the model's parameters or at the flat point ``at``.

    Returns ``(loss (detached scalar), grad [P])``. Cost: one gradient.
    """
    layout = parameter_layout(model)
    if at is None:
        params = _live_params(model, layout)
        leaves = list(params.values())
    else:
        leaves, params = _as_leaves(layout, at)
    loss = _loss(model, loss_fn, batch, params)
    grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
    return loss.detach(), layout.flatten(grads)


def gradient(model: nn.Module, loss_fn: LossFn, batch: Batch, at: Tensor | None = None) -> Tensor:
    """The flat gradient ``∇f(w; batch)`` ``[P]``. Cost: one gradient."""
    return loss_and_gradient(model, loss_fn, batch, at)[1]


def graph_gradient(
    model: nn.Module, loss_fn: LossFn, batch: Batch
) -> tuple[ParameterLayout, list[Tensor], list[Tensor]]:
    """Layout, live parameters and the gradient built with ``create_graph=True`` (for double backward)."""
    layout = parameter_layout(model)
    if layout.size == 0:
        raise ValueError("the model has no trainable parameters")
    params = _live_params(model, layout)
    leaves = list(params.values())
    loss = _loss(model, loss_fn, batch, params)
    grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True, materialize_grads=True)
    return layout, leaves, list(grads)


def hvp(model: nn.Module, loss_fn: LossFn, batch: Batch, v: Tensor) -> Tensor:
    """The exact Hessian-vector product ``H v`` ``[P]``, by double backward (Pearlmutter's trick).

    One forward, a backward that records its own graph, and a second backward through it. Cost measured at
    1.81–2.42 gradients (``scripts/bench_curvature.py``, ANN to the 784-input MLP); ``torch.func``
    forward-over-reverse cost 5–6.5 gradients when the project began (2-core CPU, torch 2.13) and fails through
    ``F.mse_loss(reduction="mean")`` in torch 2.13, so it is not used.
    Memory: O(P) plus the graph of one gradient.
    """
    layout, leaves, grads = graph_gradient(model, loss_fn, batch)
    check_vector(v, layout)
    v_blocks = layout.unflatten(v.detach().to(grads[0].dtype))
    live = [(g, vb) for g, vb in zip(grads, v_blocks) if g.requires_grad]
    if not live:  # the loss is linear in every parameter: H = 0
        return torch.zeros_like(v, dtype=grads[0].dtype)
    hv = torch.autograd.grad(
        [g for g, _ in live],
        leaves,
        grad_outputs=[vb for _, vb in live],
        allow_unused=True,
        materialize_grads=True,
    )
    return layout.flatten(hv)


#: Serialises :func:`hvp_forward_over_reverse` across threads (torch's forward-AD levels are process-wide).
FORWARD_AD_LOCK = threading.Lock()


def hvp_forward_over_reverse(
    model: nn.Module, loss_fn: LossFn, batch: Batch, v: Tensor, at: Tensor | None = None
) -> Tensor:
    """The exact Hessian-vector product ``H v`` ``[P]`` by forward-mode differentiation of the gradient
    (``torch.func.jvp`` of ``torch.func.grad``), at the model's parameters or at the flat point ``at``.

    The other exact path beside :func:`hvp` (double backward), measured per model in scripts/results/hvp_paths.md:
    2–2.7× the double backward's time on the MLPs and the seed Net, 2–6 % faster on the FedAvg CNN (whose
    convolutions dominate), unavailable through ``nn.LSTM`` on the CPU in float32 (its fused kernel has no
    forward-mode derivative: ``NotImplementedError``) and through a loss with a parameter-independent gradient block
    (torch.func writes into a ZeroTensor: ``RuntimeError``). Memory: O(P) plus one gradient's graph, with dual
    tensors.

    One call at a time in the process (:data:`FORWARD_AD_LOCK`): torch numbers its forward-AD levels process-wide,
    so calls in concurrent threads enter and leave each other's levels and fail ("no level exists") or, worse,
    return a wrong product silently (``tests/test_curvature.py`` calls it from three threads).
    """
    from torch.func import grad, jvp

    layout = parameter_layout(model)
    check_vector(v, layout)
    w = flat_parameters(model) if at is None else at.detach()
    primals = dict(zip(layout.names, (t.detach() for t in layout.unflatten(w))))
    tangents = dict(zip(layout.names, layout.unflatten(v.detach().to(w.dtype))))
    with FORWARD_AD_LOCK:
        _, hv = jvp(grad(lambda params: _loss(model, loss_fn, batch, params)), (primals,), (tangents,))
    return layout.flatten([hv[name] for name in layout.names])


#: The exact Hessian-vector product paths: ``reverse`` (double backward, :func:`hvp`) and ``forward``
#: (forward-over-reverse, :func:`hvp_forward_over_reverse`).
HVP_PATHS = ("reverse", "forward")

#: ``hessian=hvp``'s path per model class, as chosen by ``scripts/bench_hvp.py`` (scripts/results/hvp_paths.md;
#: ``tests/test_curvature.py`` checks this table against that file): the double backward wherever it works, since
#: forward-over-reverse runs one call at a time in the process (:data:`FORWARD_AD_LOCK`) and would serialise the
#: Hessian-vector products of clients on the in-process pool, a larger loss than its measured 2–6 % gain on the
#: CNN in one thread. A class not listed takes ``reverse``.
HVP_PATH_BY_MODEL: dict[str, str] = {
    "ANN": "reverse",
    "Net": "reverse",
    "MLP": "reverse",
    "CNN": "reverse",
    "CharLSTM": "reverse",
}


def hvp_path(model: nn.Module) -> str:
    """The exact Hessian-vector product path ``hessian=hvp`` takes for ``model`` (:data:`HVP_PATH_BY_MODEL`)."""
    return HVP_PATH_BY_MODEL.get(type(model).__name__, "reverse")


def fd_hvp(
    model: nn.Module, loss_fn: LossFn, batch: Batch, v: Tensor, delta: float = 1e-3, at: Tensor | None = None
) -> Tensor:
    """The Per-FedAvg paper's Hessian-free product: ``[∇f(w + δv) − ∇f(w − δv)] / (2δ)`` ``[P]``, with w the
    model's parameters or the flat point ``at``.

    A central difference of two gradients (cost: two gradients), with error O(δ²‖v‖³) for smooth losses
    and round-off O(ε/δ). Exact for quadratics up to round-off.
    """
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
        raise ValueError(f"delta must be a positive finite number, got {delta!r}")
    w = flat_parameters(model) if at is None else at.detach()
    layout = parameter_layout(model)
    check_vector(v, layout)
    step = delta * v.detach().to(w.dtype)
    g_plus = gradient(model, loss_fn, batch, at=w + step)
    g_minus = gradient(model, loss_fn, batch, at=w - step)
    return (g_plus - g_minus) / (2 * delta)


class ScratchModel:
    """Loss, gradient and Hessian-vector products at flat points, computed **in** ``model``: its trainable
    parameters are overwritten with each point. The fast path of a client's local update, which owns its model.

    Same arithmetic as :func:`loss_and_gradient`, :func:`hvp` and :func:`fd_hvp`, bit for bit
    (``tests/test_curvature.py``), without their per-call costs: no ``functional_call`` re-parametrisation, no
    buffer clones, the parameter layout walked once (its effect on a whole round: docs/speed.md,
    ``scripts/bench_speed.py``). Only for models without buffers, since a train-mode forward would update e.g.
    BatchNorm statistics: :meth:`supports` says whether it applies.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        if not self.supports(model):
            raise ValueError("ScratchModel needs a model with trainable parameters and no buffers")
        self.model = model
        self.loss_fn = loss_fn
        self.layout = parameter_layout(model)
        self.params = trainable_parameters(model)
        self.path = hvp_path(model)

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return next(model.buffers(), None) is None and any(p.requires_grad for p in model.parameters())

    def load(self, w: Tensor) -> None:
        """Copy the flat point ``w`` ``[P]`` into the model's parameters (outside autograd)."""
        with torch.no_grad():
            for p, v in zip(self.params, self.layout.unflatten(w)):
                p.copy_(v)

    def _loss(self, batch: Batch) -> Tensor:
        inputs, targets = batch
        loss = self.loss_fn(self.model(inputs), targets)
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        return loss

    def loss_and_gradient(self, batch: Batch, at: Tensor) -> tuple[Tensor, Tensor]:
        """``(loss, ∇f(at; batch) [P])``, leaving the model at ``at``. Cost: one gradient."""
        self.load(at)
        loss = self._loss(batch)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True, materialize_grads=True)
        return loss.detach(), self.layout.flatten(grads)

    def hvp(self, batch: Batch, v: Tensor, at: Tensor) -> Tensor:
        """The exact ``∇²f(at; batch) v`` ``[P]`` on the model's path (:func:`hvp_path`): by double backward
        (≈ 2 gradients on the MLPs, ≈ 7 through ``nn.LSTM``), or forward-over-reverse; leaves the model at ``at``."""
        check_vector(v, self.layout)
        self.load(at)
        if self.path == "forward":
            return hvp_forward_over_reverse(self.model, self.loss_fn, batch, v)
        grads = torch.autograd.grad(
            self._loss(batch), self.params, create_graph=True, allow_unused=True, materialize_grads=True
        )
        v_blocks = self.layout.unflatten(v.detach().to(grads[0].dtype))
        live = [(g, vb) for g, vb in zip(grads, v_blocks) if g.requires_grad]
        if not live:  # the loss is linear in every parameter: H = 0
            return torch.zeros_like(v, dtype=grads[0].dtype)
        hv = torch.autograd.grad(
            [g for g, _ in live],
            self.params,
            grad_outputs=[vb for _, vb in live],
            allow_unused=True,
            materialize_grads=True,
        )
        return self.layout.flatten(hv)

    def fd_hvp(self, batch: Batch, v: Tensor, at: Tensor, delta: float = 1e-3) -> Tensor:
        """The paper's ``[∇f(at + δv) − ∇f(at − δv)] / (2δ)`` ``[P]`` (2 gradients); leaves the model at ``at − δv``."""
        if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta > 0):
            raise ValueError(f"delta must be a positive finite number, got {delta!r}")
        check_vector(v, self.layout)
        step = delta * v.detach().to(at.dtype)
        g_plus = self.loss_and_gradient(batch, at + step)[1]
        g_minus = self.loss_and_gradient(batch, at - step)[1]
        return (g_plus - g_minus) / (2 * delta)


class HessianOperator:
    """The minibatch Hessian ``H = ∇²f(at; batch)`` ``[P, P]`` as a matrix-free operator: ``op.matvec(v)`` is ``H v``.

    The gradient is built once with ``create_graph=True`` (one gradient's work, its graph kept); each product is
    then one backward through that graph (``retain_graph``), about 1–1.5 gradients instead of :func:`hvp`'s ≈ 2,
    which is what makes iterative eigensolvers cheap. :attr:`products` counts the products taken. ``at`` is a flat
    point (default: the model's own parameters); the model is never changed (see the module docstring).
    Memory: the graph of one gradient plus O(P) per product.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, batch: Batch, at: Tensor | None = None) -> None:
        self.layout = parameter_layout(model)
        if self.layout.size == 0:
            raise ValueError("the model has no trainable parameters")
        if at is None:
            params = _live_params(model, self.layout)
            self._leaves = list(params.values())
        else:
            check_vector(at, self.layout, "at")
            self._leaves, params = _as_leaves(self.layout, at)
        with torch.enable_grad():
            loss = _loss(model, loss_fn, batch, params)
            grads = torch.autograd.grad(
                loss, self._leaves, create_graph=True, allow_unused=True, materialize_grads=True
            )
        self._live = [i for i, g in enumerate(grads) if g.requires_grad]  # blocks the loss is not linear in
        self._grads = grads
        self.dtype = grads[0].dtype
        self.products = 0

    @property
    def size(self) -> int:
        """P, the number of trainable parameters."""
        return self.layout.size

    @property
    def device(self) -> torch.device:
        return self._grads[0].device

    def matvec(self, v: Tensor) -> Tensor:
        """``H v`` ``[P]`` for a flat ``v`` ``[P]`` (cast to the model's dtype). Cost: one backward of the graph."""
        check_vector(v, self.layout)
        self.products += 1
        if not self._live:  # the loss is linear in every parameter: H = 0
            return torch.zeros(self.size, dtype=self.dtype, device=v.device)
        blocks = self.layout.unflatten(v.detach().to(self.dtype))
        with torch.enable_grad():
            hv = torch.autograd.grad(
                [self._grads[i] for i in self._live],
                self._leaves,
                grad_outputs=[blocks[i] for i in self._live],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return self.layout.flatten(hv)
