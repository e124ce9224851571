"""Curvature of a minibatch loss with respect to **all** trainable parameters of a model (pure torch).

Conventions shared by every function here:

* ``batch = (inputs, targets)`` and ``loss_fn(model(inputs), targets)`` is a scalar tensor.
* Vectors are flat, of length P, laid out by :class:`ParameterLayout`: the parameters with
  ``requires_grad=True`` in ``model.parameters()`` order, each flattened row-major; buffers and frozen
  parameters are excluded. A parameter the loss does not touch gets zero gradient and zero Hessian rows.
* Losses are evaluated with ``torch.func.functional_call`` (the live parameters, or a flat vector unflattened
  into the same layout) and on clones of the module's buffers, so every call leaves the model bit-for-bit
  unchanged: parameters, buffers, ``.grad`` and train/eval mode. Nothing ever assigns ``.data`` (that recipe
  silently cuts the graph and yields an all-zero Hessian).
* Costs are stated in units of one gradient (one forward + one backward) on the same batch.

The Per-FedAvg correction is :func:`correction`: ``(I − αH) g`` with H from one of :data:`MODES`.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from perfedavg.errors import UserError

Batch = tuple[Tensor, Tensor]
#: A state dict: a model's weights by parameter name, as the server aggregates them.
Weights = dict[str, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

#: The curvature modes of :func:`correction`, in the order the docs list them.
MODES: tuple[str, ...] = ("exact", "hvp", "fd", "diag", "fo")

#: Fraction of the machine's available memory that :func:`hessian` may use when no budget is given.
DEFAULT_MEMORY_FRACTION = 0.5


# --------------------------------------------------------------------------------------------------------------
# Parameter layout
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParamBlock:
    """One parameter's place in the flat vector: ``flat[offset : offset + numel]`` reshaped to ``shape``."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int

    @property
    def slice(self) -> slice:
        return slice(self.offset, self.offset + self.numel)


@dataclass(frozen=True)
class ParameterLayout:
    """How a model's trainable parameters map to one flat vector of length :attr:`size` (= P)."""

    blocks: tuple[ParamBlock, ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParameterLayout:
        blocks, offset = [], 0
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            blocks.append(ParamBlock(name, tuple(p.shape), offset, p.numel()))
            offset += p.numel()
        return cls(tuple(blocks))

    @property
    def size(self) -> int:
        return self.blocks[-1].offset + self.blocks[-1].numel if self.blocks else 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    def block(self, name: str) -> ParamBlock:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(f"no trainable parameter named {name!r}; the layout has {list(self.names)}")

    def flatten(self, tensors: Sequence[Tensor]) -> Tensor:
        """Concatenate per-parameter tensors (layout order and shapes) into one flat ``[P]`` vector."""
        if len(tensors) != len(self.blocks):
            raise ValueError(f"expected {len(self.blocks)} tensors, got {len(tensors)}")
        return torch.cat([t.reshape(-1) for t in tensors])

    def unflatten(self, vector: Tensor) -> list[Tensor]:
        """Split a flat ``[P]`` vector into views shaped like each parameter (layout order)."""
        if vector.dim() != 1 or vector.numel() != self.size:
            raise ValueError(f"expected a flat vector of length P={self.size}, got shape {tuple(vector.shape)}")
        return [vector[b.slice].view(b.shape) for b in self.blocks]

    def as_dict(self, vector: Tensor) -> dict[str, Tensor]:
        """``{parameter name: view of vector}``, the form ``functional_call`` takes."""
        return dict(zip(self.names, self.unflatten(vector)))

    def describe(self) -> str:
        """A small table: name, shape, flat slice."""
        rows = [f"{b.name:<30} {str(list(b.shape)):<20} [{b.offset}:{b.offset + b.numel}]" for b in self.blocks]
        return "\n".join([*rows, f"P = {self.size}"])


def parameter_layout(model: nn.Module) -> ParameterLayout:
    """The flat layout of ``model``'s trainable parameters (see module docstring)."""
    return ParameterLayout.of(model)


def trainable_parameters(model: nn.Module) -> list[Tensor]:
    """The trainable parameters of ``model`` in layout order (the live tensors, not copies)."""
    return [p for p in model.parameters() if p.requires_grad]


def flat_parameters(model: nn.Module) -> Tensor:
    """A detached copy of the trainable parameters as one flat ``[P]`` vector."""
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def set_flat_parameters(model: nn.Module, vector: Tensor) -> None:
    """Copy a flat ``[P]`` vector into the model's trainable parameters, in place (outside autograd)."""
    layout = parameter_layout(model)
    with torch.no_grad():
        for p, v in zip(trainable_parameters(model), layout.unflatten(vector)):
            p.copy_(v)


# --------------------------------------------------------------------------------------------------------------
# Loss and gradient
# --------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------
# Hessian-vector products
# --------------------------------------------------------------------------------------------------------------


def _graph_gradient(
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


def _check_vector(v: Tensor, layout: ParameterLayout, what: str = "v") -> None:
    if v.dim() != 1 or v.numel() != layout.size:
        raise ValueError(f"{what} must be a flat vector of length P={layout.size}, got shape {tuple(v.shape)}")


def hvp(model: nn.Module, loss_fn: LossFn, batch: Batch, v: Tensor) -> Tensor:
    """The exact Hessian-vector product ``H v`` ``[P]``, by double backward (Pearlmutter's trick).

    One forward, a backward that records its own graph, and a second backward through it. Cost measured at
    1.81–2.42 gradients (``scripts/bench_curvature.py``, ANN to the 784-input MLP); ``torch.func``
    forward-over-reverse cost 5–6.5 gradients when the project began (2-core CPU, torch 2.13) and fails through
    ``F.mse_loss(reduction="mean")`` in torch 2.13, so it is not used.
    Memory: O(P) plus the graph of one gradient.
    """
    layout, leaves, grads = _graph_gradient(model, loss_fn, batch)
    _check_vector(v, layout)
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
    _check_vector(v, layout)
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
        """The exact ``∇²f(at; batch) v`` ``[P]`` by double backward, leaving the model at ``at``. ≈ 2 gradients."""
        _check_vector(v, self.layout)
        self.load(at)
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
        _check_vector(v, self.layout)
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
            _check_vector(at, self.layout, "at")
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
        _check_vector(v, self.layout)
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


# --------------------------------------------------------------------------------------------------------------
# Spectrum
# --------------------------------------------------------------------------------------------------------------

#: Up to this many parameters :func:`top_eigenvalues` takes the dense route (P products, then ``eigvalsh``).
DENSE_SPECTRUM_MAX_P = 64


@dataclass(frozen=True)
class Spectrum:
    """The k largest eigenvalues of a minibatch Hessian (descending, float64) and what they cost."""

    values: Tensor  # [k], descending
    products: int  # Hessian-vector products taken


def hessian_spectrum(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    k: int = 1,
    *,
    at: Tensor | None = None,
    tol: float = 1e-10,
    max_restarts: int | None = None,
    seed: int = 0,
    operator: HessianOperator | None = None,
) -> Spectrum:
    """:func:`top_eigenvalues` with its cost: see there. ``operator`` reuses a :class:`HessianOperator` already
    built for this (model, loss, batch, at) (its products are counted in the result from that point on)."""
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not (isinstance(tol, (int, float)) and 0 <= tol < 1):
        raise ValueError(f"tol must be in [0, 1), got {tol!r}")
    op = operator if operator is not None else HessianOperator(model, loss_fn, batch, at)
    p = op.size
    if k > p:
        raise ValueError(f"k={k}: the Hessian has only P={p} eigenvalues")
    first = op.products
    device = op.device
    if p <= max(DENSE_SPECTRUM_MAX_P, 2 * k + 1):
        eye = torch.eye(p, dtype=op.dtype, device=device)
        dense = torch.stack([op.matvec(e) for e in eye]).to(torch.float64)
        values = torch.linalg.eigvalsh((dense + dense.T) / 2).flip(0)[:k].cpu()
        return Spectrum(values, op.products - first)

    import numpy as np
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    def matvec(x: np.ndarray) -> np.ndarray:
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(-1)).to(device)
        return op.matvec(v).to(torch.float64).cpu().numpy()

    v0 = np.random.default_rng(seed).standard_normal(p)
    linear = LinearOperator((p, p), matvec=matvec, dtype=np.float64)
    try:
        found = eigsh(linear, k=k, which="LA", tol=tol, v0=v0, maxiter=max_restarts, return_eigenvectors=False)
    except ArpackNoConvergence as e:
        raise RuntimeError(
            f"top_eigenvalues: Lanczos did not reach tol={tol:g} for k={k} within max_restarts={max_restarts} "
            f"({op.products - first} Hessian-vector products); {len(e.eigenvalues)} of {k} converged"
        ) from None
    values = torch.from_numpy(np.sort(np.asarray(found, dtype=np.float64))[::-1].copy())
    return Spectrum(values, op.products - first)


def top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    k: int = 1,
    *,
    at: Tensor | None = None,
    tol: float = 1e-10,
    max_restarts: int | None = None,
    seed: int = 0,
) -> Tensor:
    """The ``k`` largest (algebraic) eigenvalues of the minibatch Hessian over all trainable parameters, ``[k]``
    float64, descending; at the model's parameters or at the flat point ``at``.

    Matrix-free: ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``, ``which="LA"``) on a
    :class:`HessianOperator`, in float64 (products in the model's dtype), started from a normal vector drawn
    with ``seed`` (deterministic, no global RNG touched). ``tol``: ARPACK's relative accuracy of each eigenvalue,
    ``|λ̂ − λ| ≤ tol·|λ|`` (0: machine precision); ``max_restarts``: ARPACK's ``maxiter`` (default 10·P), beyond
    which ``RuntimeError``. Cost: one gradient with its graph kept, then one backward per product; a restart
    takes about ``ncv − k`` products with ``ncv = max(2k + 1, 20)`` (k = 1 at tol 1e-3 on the paper's 784-80-60-10
    MLP, batch 40: 31 products, ``scripts/bench_curvature.py``; the test cases at tol 0: 53–71 for k = 3).
    For P ≤ :data:`DENSE_SPECTRUM_MAX_P` the Hessian is formed with P products and ``eigvalsh`` gives the exact
    spectrum.
    """
    return hessian_spectrum(model, loss_fn, batch, k, at=at, tol=tol, max_restarts=max_restarts, seed=seed).values


# --------------------------------------------------------------------------------------------------------------
# Full Hessian
# --------------------------------------------------------------------------------------------------------------


class HessianTooLargeError(UserError, ValueError):
    """The full Hessian would not fit in the memory budget; raised before anything large is allocated."""


def available_memory_bytes() -> int:
    """Memory the OS reports as available (``MemAvailable``), or total physical memory if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def default_memory_budget_gb() -> float:
    """:data:`DEFAULT_MEMORY_FRACTION` of the available memory, in GB (10⁹ bytes)."""
    return DEFAULT_MEMORY_FRACTION * available_memory_bytes() / 1e9


def _chunk_size(p: int, elem: int) -> int:
    """Rows per batched double backward.

    64 measured fastest for Net(12, 12) (12.3 s; 256 rows: 18.6 s, 1024: 22.5 s): the batched intermediates are
    ``rows × batch × activations`` and stop fitting in cache. The one-hot block is also kept ≤ 64 MB.
    """
    return max(1, min(p, 64, (64 * 2**20) // max(1, p * elem)))


def hessian_memory_bytes(num_params: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes :func:`hessian` needs for ``P = num_params``: the ``[P, P]`` result plus its chunk workspace."""
    elem = torch.empty((), dtype=dtype).element_size()
    return num_params * num_params * elem + 2 * _chunk_size(num_params, elem) * num_params * elem


def check_hessian_fits(num_params: int, dtype: torch.dtype, max_memory_gb: float | None = None) -> None:
    """Raise :class:`HessianTooLargeError` if the full Hessian of P parameters exceeds the budget."""
    budget_gb = default_memory_budget_gb() if max_memory_gb is None else float(max_memory_gb)
    need = hessian_memory_bytes(num_params, dtype)
    if need > budget_gb * 1e9:
        raise HessianTooLargeError(
            f"the full Hessian has P = {num_params:,} parameters and needs {need / 1e9:.2f} GB "
            f"({str(dtype).removeprefix('torch.')}), above the budget max_memory_gb = {budget_gb:.2f} GB; "
            f"use hessian=hvp (exact Hessian-vector products, O(P) memory) or raise max_memory_gb"
        )


def hessian(model: nn.Module, loss_fn: LossFn, batch: Batch, *, max_memory_gb: float | None = None) -> Tensor:
    """The exact Hessian ``∇²f(w; batch)`` over all trainable parameters, ``[P, P]``, rows in layout order.

    Built ``c`` rows at a time (:func:`_hessian_row_blocks`): one gradient with ``create_graph=True``, then per
    chunk one batched double backward (``is_grads_batched``) with one-hot cotangents, written straight into the
    preallocated result. Cost: P Hessian-vector products' worth of arithmetic in about P/64 vectorised passes
    (Net(12, 12), P = 23,365: 15.5 s with 1 thread, 10.5 s with 2, on a 2-core CPU); peak memory: the ``P²``
    result plus a few ``c × P`` blocks. Before allocating, the size is checked against ``max_memory_gb`` (default:
    half the available memory) and :class:`HessianTooLargeError` names P, the bytes and the budget.
    """
    layout = parameter_layout(model)
    p = layout.size
    if p == 0:
        raise ValueError("the model has no trainable parameters")
    dtype = trainable_parameters(model)[0].dtype
    check_hessian_fits(p, dtype, max_memory_gb)

    result = torch.empty(p, p, dtype=dtype, device=trainable_parameters(model)[0].device)
    for block, start, rows in _hessian_row_blocks(model, loss_fn, batch):
        first = block.offset + start
        result[first : first + rows.shape[0]] = rows
    return result


def _hessian_row_blocks(
    model: nn.Module, loss_fn: LossFn, batch: Batch, *, own_columns_only: bool = False
) -> Iterator[tuple[ParamBlock, int, Tensor]]:
    """Yield ``(block, start, rows)`` covering H block by block, ``c`` rows at a time.

    ``rows`` is ``H[block.offset + start : … + c, :]`` (``[c, P]``), or only the block's own columns
    (``[c, block.numel]``) with ``own_columns_only``. One gradient with ``create_graph=True``, then per chunk one
    batched double backward whose cotangents are one-hot vectors on **that block's gradient only**: row i of H is
    ``∇(e_i · ∇f)``, and leaving the other blocks out lets autograd skip their branches of the double backward
    (for Net, the unbatched convolution double backward for the 98.6 % of rows that belong to ``f2.weight``).
    """
    layout, leaves, grads = _graph_gradient(model, loss_fn, batch)
    dtype, device = grads[0].dtype, grads[0].device
    chunk = _chunk_size(layout.size, torch.empty((), dtype=dtype).element_size())
    for index, (block, grad) in enumerate(zip(layout.blocks, grads)):
        wrt = [leaves[index]] if own_columns_only else leaves
        width = block.numel if own_columns_only else layout.size
        flat = grad.reshape(-1)
        for start in range(0, block.numel, chunk):
            count = min(chunk, block.numel - start)
            if not flat.requires_grad:  # the loss is linear in this parameter: its rows of H are zero
                yield block, start, torch.zeros(count, width, dtype=dtype, device=device)
                continue
            onehot = torch.zeros(count, block.numel, dtype=dtype, device=device)
            onehot[torch.arange(count), torch.arange(start, start + count)] = 1
            out = torch.autograd.grad(
                flat, wrt, grad_outputs=onehot, retain_graph=True, is_grads_batched=True, allow_unused=True
            )
            parts = [
                torch.zeros(count, w.numel(), dtype=dtype, device=device) if o is None else o.reshape(count, -1)
                for o, w in zip(out, wrt)
            ]
            yield block, start, torch.cat(parts, dim=1)


# --------------------------------------------------------------------------------------------------------------
# Hessian diagonal
# --------------------------------------------------------------------------------------------------------------


#: The reasons :func:`hessian_diag` has already warned about (each is said once per process).
_DIAG_FALLBACK_WARNED: set[str] = set()


class DiagFallbackWarning(UserWarning):
    """:func:`hessian_diag` cannot take BackPACK's one-pass path and uses the row-by-row fallback (P× the work)."""


def hessian_diag(model: nn.Module, loss_fn: LossFn, batch: Batch) -> Tensor:
    """The exact diagonal of the Hessian, ``[P]``.

    Fast path: BackPACK's ``DiagHessian`` on a copy of the model (one extended backward pass, milliseconds),
    taken when the loss is ``nn.MSELoss`` / ``nn.CrossEntropyLoss`` (modules with default options) or the
    functional ``F.mse_loss`` / ``F.cross_entropy`` (mean or sum, also through ``functools.partial``) and every
    layer is one BackPACK differentiates exactly (:mod:`perfedavg.curvature.backpack`). Otherwise the exact general
    fallback: rows of H in vectorised blocks, keeping only their diagonal entries (the work of P Hessian-vector
    products, like :func:`hessian`; memory of one block), with a :class:`DiagFallbackWarning` naming the reason,
    once per reason and process.
    """
    from perfedavg.curvature import backpack as diag_backpack  # local import: BackPACK is only needed for this function

    diag, why = diag_backpack.diag_hessian_or_reason(model, loss_fn, batch)
    if diag is not None:
        return diag
    if why not in _DIAG_FALLBACK_WARNED:
        _DIAG_FALLBACK_WARNED.add(why)
        p = parameter_layout(model).size
        warnings.warn(
            f"hessian_diag: BackPACK's one-pass diagonal does not apply: {why}; using the exact row-by-row "
            f"fallback, the work of P = {p:,} Hessian-vector products per call (about a thousand times slower "
            f"for the seed's Net(12, 12); docs/curvature.md)",
            DiagFallbackWarning,
            stacklevel=2,
        )
    return _diag_by_rows(model, loss_fn, batch)


def _diag_by_rows(model: nn.Module, loss_fn: LossFn, batch: Batch) -> Tensor:
    parts = []
    for _, start, rows in _hessian_row_blocks(model, loss_fn, batch, own_columns_only=True):
        idx = torch.arange(rows.shape[0])
        parts.append(rows[idx, idx + start])
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------------------------
# The Per-FedAvg correction
# --------------------------------------------------------------------------------------------------------------


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise ``ValueError`` listing them."""
    if mode not in MODES:
        raise ValueError(f"hessian mode {mode!r} is not one of: {', '.join(MODES)}")
    return mode


def correction(
    mode: str,
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    g: Tensor,
    alpha: float,
    delta: float = 1e-3,
    *,
    max_memory_gb: float | None = None,
) -> Tensor:
    """Per-FedAvg's corrected direction ``(I − αH) g`` ``[P]``, H the Hessian at the model's parameters on ``batch``.

    ``mode``:

    * ``exact``: build H (:func:`hessian`) and multiply; O(P²) memory, ~P HVPs of work.
    * ``hvp``: exact, via one :func:`hvp` (≈ 2 gradients).
    * ``fd``: the paper's finite difference :func:`fd_hvp` with step ``delta`` (2 gradients).
    * ``diag``: ``(1 − α·diag H) ⊙ g`` with the exact diagonal (:func:`hessian_diag`), the first seed's variant.
    * ``fo``: ``g`` (first-order Per-FedAvg; no curvature).
    """
    check_mode(mode)
    layout = parameter_layout(model)
    _check_vector(g, layout, "g")
    g = g.detach()
    if mode == "fo":
        return g.clone()
    if mode == "exact":
        return g - alpha * (hessian(model, loss_fn, batch, max_memory_gb=max_memory_gb) @ g)
    if mode == "hvp":
        return g - alpha * hvp(model, loss_fn, batch, g)
    if mode == "fd":
        return g - alpha * fd_hvp(model, loss_fn, batch, g, delta)
    return (1 - alpha * hessian_diag(model, loss_fn, batch)) * g


def snapshot(model: nn.Module) -> dict[str, object]:
    """A deep copy of everything :mod:`perfedavg.curvature` promises not to change (for tests and checks)."""
    return {
        "state": copy.deepcopy(model.state_dict()),
        "grads": {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
    }
