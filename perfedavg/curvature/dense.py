"""The exact full Hessian ``[P, P]``, built in vectorised row blocks, and its memory budget (checked before anything
large is allocated)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from perfedavg.curvature.layout import Batch, LossFn, ParamBlock, parameter_layout, trainable_parameters
from perfedavg.curvature.products import graph_gradient
from perfedavg.errors import UserError

#: Fraction of the machine's available memory that :func:`hessian` may use when no budget is given.
DEFAULT_MEMORY_FRACTION = 0.5


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

    Built ``c`` rows at a time (:func:`hessian_row_blocks`): one gradient with ``create_graph=True``, then per
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
    for block, start, rows in hessian_row_blocks(model, loss_fn, batch):
        first = block.offset + start
        result[first : first + rows.shape[0]] = rows
    return result


def hessian_row_blocks(
    model: nn.Module, loss_fn: LossFn, batch: Batch, *, own_columns_only: bool = False
) -> Iterator[tuple[ParamBlock, int, Tensor]]:
    """Yield ``(block, start, rows)`` covering H block by block, ``c`` rows at a time.

    ``rows`` is ``H[block.offset + start : … + c, :]`` (``[c, P]``), or only the block's own columns
    (``[c, block.numel]``) with ``own_columns_only``. One gradient with ``create_graph=True``, then per chunk one
    batched double backward whose cotangents are one-hot vectors on **that block's gradient only**: row i of H is
    ``∇(e_i · ∇f)``, and leaving the other blocks out lets autograd skip their branches of the double backward
    (for Net, the unbatched convolution double backward for the 98.6 % of rows that belong to ``f2.weight``).
    """
    layout, leaves, grads = graph_gradient(model, loss_fn, batch)
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
