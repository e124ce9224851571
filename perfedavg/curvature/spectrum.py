"""The top of a minibatch Hessian's spectrum, matrix-free on a :class:`HessianOperator`: ARPACK's Lanczos to a
tolerance (:func:`hessian_spectrum`), or a fixed number of Lanczos steps (:func:`lanczos_top_eigenvalue`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from perfedavg.curvature.layout import Batch, LossFn
from perfedavg.curvature.products import HessianOperator

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


def lanczos_top_eigenvalue(operator: HessianOperator, iterations: int, *, seed: int = 0) -> float:
    """λ_max of the operator's Hessian estimated by ``iterations`` steps of Lanczos (full reorthogonalization):
    the largest Ritz value of the ``iterations × iterations`` tridiagonal matrix, a lower bound of λ_max that
    converges from below, fastest when the top eigenvalue stands apart (the usual case for a network's Hessian).

    Pure torch, deterministic: the start vector is normal, drawn from a generator seeded with ``seed`` (no global
    RNG touched). Exact (to rounding) once ``iterations ≥ P`` or when the Krylov space closes earlier. Cost:
    ``min(iterations, P)`` products of ``operator`` plus O(iterations · P) memory and arithmetic for the basis;
    unlike :func:`hessian_spectrum` (ARPACK to a tolerance) the cost is fixed in advance, which a monitor that runs
    every few rounds needs."""
    if not (isinstance(iterations, int) and iterations >= 1):
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    p = operator.size
    steps = min(iterations, p)
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(p, generator=generator, dtype=torch.float64)
    basis = [(v / v.norm()).to(device=operator.device, dtype=operator.dtype)]
    diagonal: list[float] = []
    off_diagonal: list[float] = []
    for _ in range(steps):
        q = basis[-1]
        w = operator.matvec(q)
        diagonal.append(float(torch.dot(w, q)))
        q_all = torch.stack(basis)  # [j, P]
        for _ in range(2):  # full reorthogonalization, twice ("twice is enough")
            w = w - q_all.T @ (q_all @ w)
        norm = float(w.norm())
        scale = max(abs(x) for x in diagonal + off_diagonal)
        if len(diagonal) == steps or not math.isfinite(norm) or norm <= 1e-10 * scale:
            break  # done, or the Krylov space is invariant: its Ritz values are exact eigenvalues
        off_diagonal.append(norm)
        basis.append(w / norm)
    t = torch.diag(torch.tensor(diagonal, dtype=torch.float64))
    if off_diagonal:
        off = torch.tensor(off_diagonal, dtype=torch.float64)
        t = t + torch.diag(off, 1) + torch.diag(off, -1)
    if not bool(torch.isfinite(t).all()):
        return math.nan
    return float(torch.linalg.eigvalsh(t)[-1])
