"""The exact Hessian diagonal ``[P]``: BackPACK's one-pass path where it applies, otherwise the full Hessian's
row blocks keeping their diagonal entries."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from perfedavg.curvature.dense import hessian_row_blocks
from perfedavg.curvature.layout import Batch, LossFn, parameter_layout

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
    for _, start, rows in hessian_row_blocks(model, loss_fn, batch, own_columns_only=True):
        idx = torch.arange(rows.shape[0])
        parts.append(rows[idx, idx + start])
    return torch.cat(parts)
