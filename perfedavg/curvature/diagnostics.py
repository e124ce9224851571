"""What Per-FedAvg's second-order term does at one meta-step (pure torch; no Flower): opt-in diagnostics.

At a client's meta-step ``w ← w − β (I − αH) g`` (H the Hessian of f(·; D″) at w, g the gradient at the temporary
model; see :mod:`perfedavg.algorithms.per_fedavg`), :func:`meta_step_diagnostics` measures

* ``correction_ratio``  ``‖α H g‖ / ‖g‖``: how large the curvature term is next to the first-order direction;
* ``cosine_to_fo``      ``cos((I − αH) g, g)``: how far the corrected direction turns away from FO's;
* ``fd_rel_error``      ``‖Ĥg − Hg‖ / ‖Hg‖``, Ĥg the paper's central finite difference at the run's δ: how far
  ``hessian=fd`` is from the exact product;
* ``top_eigenvalue``    λ_max(H) on D″ (Lanczos, :func:`perfedavg.curvature.hessian_spectrum`): the sharpness where
  the meta-model sits. Where ``α·λ_max > 1`` the factor ``(I − αH)`` reverses g along that direction.

The quantities are computed whatever the run's Hessian mode is (also for ``fo``, which does not use them), exactly
(an exact HVP, not the mode's estimate), from the same D″, g and w the step used, and never feed back into the
trajectory: nothing here touches the model, its parameters or any random generator.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from perfedavg import curvature
from perfedavg.curvature.layout import Batch, LossFn

#: The diagnostics, in the order they are documented; each is logged as ``curvature/<name>``.
NAMES: tuple[str, ...] = ("correction_ratio", "cosine_to_fo", "fd_rel_error", "top_eigenvalue")

#: The prefix of their metric names, in a client's training reply and in TensorBoard (``curvature/top_eigenvalue``).
TAG_PREFIX = "curvature/"

#: Relative accuracy of the top eigenvalue (ARPACK's ``tol``): enough to read a curve, a few dozen products.
EIGEN_TOL = 1e-3


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def meta_step_diagnostics(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Batch,
    g: Tensor,
    w: Tensor,
    alpha: float,
    delta: float,
    *,
    eigen_tol: float = EIGEN_TOL,
) -> dict[str, float]:
    """The four diagnostics of :data:`NAMES` at the point ``w`` ``[P]`` for the direction ``g`` ``[P]`` on ``batch``
    (the meta-step's D″). A value that cannot be formed (e.g. ``g = 0``, or Lanczos not converging) is NaN.

    Cost: one gradient with its graph kept, one product for Hg, the top eigenvalue's Lanczos products (a few dozen
    at the default ``eigen_tol``), and two gradients for the finite difference. The model is left unchanged.
    """
    op = curvature.HessianOperator(model, loss_fn, batch, at=w)
    g = g.detach().to(op.dtype)
    hg = op.matvec(g)
    corrected = g - alpha * hg
    g_norm, hg_norm = float(g.norm()), float(hg.norm())
    fd = curvature.fd_hvp(model, loss_fn, batch, g, delta, at=w)
    try:
        top = float(curvature.hessian_spectrum(model, loss_fn, batch, 1, tol=eigen_tol, operator=op).values[0])
    except RuntimeError:  # Lanczos did not converge within ARPACK's default restarts
        top = math.nan
    return {
        "correction_ratio": _ratio(alpha * hg_norm, g_norm),
        "cosine_to_fo": _ratio(float(torch.dot(corrected, g)), float(corrected.norm()) * g_norm),
        "fd_rel_error": _ratio(float((fd - hg).norm()), hg_norm),
        "top_eigenvalue": top,
    }
