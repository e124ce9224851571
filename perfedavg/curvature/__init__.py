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

The Per-FedAvg correction is :func:`correction`: ``(I − αH) g`` with H from one of :data:`MODES`. The modules:
:mod:`.layout` (the flat vector), :mod:`.products` (gradients, Hessian-vector products, the matrix-free operator),
:mod:`.dense` (the full Hessian and its memory budget), :mod:`.diagonal` (the exact diagonal, with
:mod:`.backpack`'s fast path), :mod:`.spectrum` (top eigenvalues), :mod:`.diagnostics` (a meta-step's curvature
figures). Their public names are re-exported here: ``perfedavg.curvature.hvp`` and so on.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from perfedavg.curvature.dense import (
    DEFAULT_MEMORY_FRACTION,
    HessianTooLargeError,
    available_memory_bytes,
    check_hessian_fits,
    default_memory_budget_gb,
    hessian,
    hessian_memory_bytes,
)
from perfedavg.curvature.diagonal import DiagFallbackWarning, hessian_diag
from perfedavg.curvature.layout import (
    Batch,
    LossFn,
    ParamBlock,
    ParameterLayout,
    Weights,
    check_vector,
    flat_parameters,
    parameter_layout,
    set_flat_parameters,
    trainable_parameters,
)
from perfedavg.curvature.products import (
    HVP_PATH_BY_MODEL,
    HVP_PATHS,
    HessianOperator,
    ScratchModel,
    fd_hvp,
    gradient,
    hvp,
    hvp_forward_over_reverse,
    hvp_path,
    loss_and_gradient,
)
from perfedavg.curvature.spectrum import DENSE_SPECTRUM_MAX_P, Spectrum, hessian_spectrum, top_eigenvalues

#: The curvature modes of :func:`correction`, in the order the docs list them.
MODES: tuple[str, ...] = ("exact", "hvp", "fd", "diag", "fo")


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
    check_vector(g, layout, "g")
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


__all__ = [
    "DEFAULT_MEMORY_FRACTION",
    "DENSE_SPECTRUM_MAX_P",
    "MODES",
    "Batch",
    "DiagFallbackWarning",
    "HessianOperator",
    "HessianTooLargeError",
    "LossFn",
    "ParamBlock",
    "ParameterLayout",
    "ScratchModel",
    "HVP_PATHS",
    "HVP_PATH_BY_MODEL",
    "hvp_forward_over_reverse",
    "hvp_path",
    "Spectrum",
    "Weights",
    "available_memory_bytes",
    "check_hessian_fits",
    "check_mode",
    "correction",
    "default_memory_budget_gb",
    "fd_hvp",
    "flat_parameters",
    "gradient",
    "hessian",
    "hessian_diag",
    "hessian_memory_bytes",
    "hessian_spectrum",
    "hvp",
    "loss_and_gradient",
    "parameter_layout",
    "set_flat_parameters",
    "snapshot",
    "top_eigenvalues",
    "trainable_parameters",
]
