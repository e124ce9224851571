"""Per-FedAvg (Fallah, Mokhtari, Ozdaglar, NeurIPS 2020): MAML-style local steps with a second-order correction.

Notation: f is a client's minibatch loss, α the inner (personalization) step, β the outer (meta) step. One local
step draws three independent minibatches D, D′, D″ and does

    w̃ = w − α ∇f(w; D)             (a temporary personalized model)
    g = ∇f(w̃; D′)                  (the gradient there)
    w ← w − β (I − α ∇²f(w; D″)) g  (the second-order meta-update; see :func:`perfedavg.curvature.correction`)

The Hessian term is selected by ``hessian`` (exact, hvp, fd, diag, fo). Personalization before evaluation is
``adapt_steps`` α-steps on the client's training split, as for FedAvg.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar

from perfedavg.algorithms.base import Algorithm, LocalResult, LocalSpec, loss_and_gradient_of, sample_batch
from perfedavg.algorithms.declaration import Declaration
from perfedavg.lazy_import import lazy_import

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from perfedavg import curvature
    from perfedavg.curvature import Batch, LossFn, diagnostics
else:  # loaded on first use (perfedavg.lazy_import)
    curvature = lazy_import("perfedavg.curvature")
    diagnostics = lazy_import("perfedavg.curvature.diagnostics")


class PerFedAvg(Algorithm):
    """Per-FedAvg's local steps. Cost per step: 2 gradients + one correction (hvp ≈ 2 gradients, fd 2, diag ~3,
    exact ~P HVPs; measured in docs/curvature.md)."""

    declaration: ClassVar[Declaration] = Declaration(
        name="perfedavg",
        title="Per-FedAvg",
        reads=frozenset({"alpha", "beta", "diagnostics.every", "stability.every", "stability.safeguard"}),
        uses_hessian=True,
        reference="Fallah, Mokhtari, Ozdaglar, NeurIPS 2020",
        order=20,
    )

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
        """``train_loss``: the mean of f(w; D) before each step. ``diagnose``: also measure
        :func:`perfedavg.curvature.diagnostics.meta_step_diagnostics` at the first meta-step (its D″, g and w), into
        ``LocalResult.diagnostics``; the weights are the same bit for bit."""
        curvature.check_mode(spec.hessian)
        curvature_s = 0.0
        w = curvature.flat_parameters(model)
        # fo, hvp and fd run in the model itself (same arithmetic, less overhead); exact and diag through curvature.
        loss_and_gradient, scratch = loss_and_gradient_of(model, loss_fn)
        losses = []
        found: dict[str, float] = {}
        diagnostics_s = 0.0
        for step in range(spec.local_steps):
            batch = sample_batch(x, y, spec.batch_size, generator)
            loss, grad = loss_and_gradient(batch, at=w)
            losses.append(float(loss))
            batch_g = sample_batch(x, y, spec.batch_size, generator)
            batch_h = sample_batch(x, y, spec.batch_size, generator)
            g = loss_and_gradient(batch_g, at=w - spec.alpha * grad)[1]
            t = time.perf_counter()
            direction = corrected(spec, model, loss_fn, scratch, batch_h, g, w)
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
            curvature_s=curvature_s,
            num_examples=int(x.shape[0]),
            diagnostics=found,
            diagnostics_s=diagnostics_s,
        )


def corrected(
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
