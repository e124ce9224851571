"""Is a client's step stable at the run's α? The sharpness λ_max of its minibatch Hessian where it starts, against α
(pure torch; no Flower): the stability monitor (``stability.every``, docs/curvature.md "Stability").

Why λ_max: Per-FedAvg's meta-update multiplies the gradient by ``(I − αH)``, whose eigenvalues are ``1 − αλ_i``.
Where ``α·λ_max > 1`` the factor reverses the gradient along H's top eigenvector; where ``α·λ_max > 2`` it
*amplifies* it (``|1 − αλ_max| > 1``), and the inner step ``w − α∇f`` is plain gradient descent past its own
stability limit ``2/λ_max``. Repeated over local steps and rounds, that component can grow geometrically. The
second-order runs that collapse do so with many clients past α·λ_max = 2, and so do many that never collapse
(scripts/results/stability.md): the monitor marks the regime, not the run.

Each monitored client (:func:`sharpness`) draws one minibatch of the run's ``batch_size`` from its training split
with a generator of its own (:func:`probe_generator`: the training stream is untouched, so results are identical
with the monitor on or off) and runs a fixed number of Lanczos steps at the global weights it received
(:func:`perfedavg.curvature.spectrum.lanczos_top_eigenvalue`). The server (:class:`StabilityWatch`) turns the
clients' values into the round's metrics and, when the share of clients past the limit crosses
``stability.warn_fraction``, one warning line naming the α that would keep every monitored client's α·λ_max ≤ 1.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from perfedavg.curvature.layout import Batch, LossFn
from perfedavg.curvature.products import HessianOperator
from perfedavg.curvature.spectrum import lanczos_top_eigenvalue

#: Prefix of the monitor's metrics in metrics.json and TensorBoard (``stability/alpha_lambda_max``).
TAG_PREFIX = "stability/"
#: ``stability.every: null`` (the default): probe every this many rounds where the run applies (I − αH), never in
#: a first-order run (which is never warned about: the probe would only add curves, at 14 % of FO's training time
#: on MNIST's paper round against 7 % of HF's, scripts/results/stability.md).
AUTO_EVERY = 20
#: The monitor's warning line as the run's log has it (``round 420: α·λ_max > 2 on 5 of 10 monitored clients …``,
#: :meth:`StabilityWatch.observe`): perfedavg-report finds a run's first warning by it.
WARNING_PATTERN = re.compile(r"round (\d+): α·λ_max > \S+ on \d+ of \d+ monitored clients")


def probe_every(every: int | None, hessian_mode: str) -> int:
    """The rounds between probes for ``stability.every`` (None: :data:`AUTO_EVERY` unless ``hessian_mode`` is
    ``fo``, then 0: off) ; an integer as given."""
    if every is None:
        return 0 if hessian_mode == "fo" else AUTO_EVERY
    return int(every)


#: The client's reply keys: its λ_max and the seconds the probe took.
REPLY_KEY = "stability-lambda-max"
REPLY_SECONDS = "stability-s"
#: The client's reply key for the inner step the safeguard gave it (only where it lowered α).
REPLY_ALPHA = "stability-alpha"


def probe_generator(seed: int, client_id: int, server_round: int) -> torch.Generator:
    """The probe's minibatch randomness: a function of (seed, client, round) alone, and a stream of its own (the
    client's training generator is never drawn from)."""
    key = f"stability/{seed}/{client_id}/{server_round}".encode()
    return torch.Generator().manual_seed(zlib.crc32(key) * 2**20 + seed)


def sharpness(model: nn.Module, loss_fn: LossFn, batch: Batch, iterations: int, *, seed: int = 0) -> float:
    """λ_max of the Hessian of ``loss_fn`` on ``batch`` over all trainable parameters, at the model's parameters,
    from ``iterations`` Lanczos steps (a lower bound that converges from below; NaN if a product is not finite).

    Cost: one gradient with its graph kept plus ``iterations`` Hessian-vector products (each about one backward of
    that graph); the model is left unchanged."""
    operator = HessianOperator(model, loss_fn, batch)
    return lanczos_top_eigenvalue(operator, iterations, seed=seed)


@dataclass(frozen=True)
class RoundStability:
    """One round's monitor output: its metrics (``stability/…``), the per-client values for a histogram, and the
    warning line to print (None: nothing to say this round)."""

    metrics: dict[str, float]
    histograms: dict[str, list[float]]
    warning: str | None


class StabilityWatch:
    """The server's side of the monitor for a run of inner step ``alpha``: per round, the clients' α·λ_max summed
    up, and — where ``warns`` (the run applies ``(I − αH)``: a Hessian mode other than ``fo``) — a warning when the
    share of clients above ``warn_above`` reaches ``warn_fraction``, once per episode (again only after a monitored
    round below the threshold).

    First-order runs are measured but never warned about: they do not apply ``(I − αH)``, and plain gradient steps
    settle near ``α·λ_max ≈ 2`` by themselves (the "edge of stability", Cohen et al., ICLR 2021): FO at MNIST's
    tuned α = 0.144 has its median client at 1.95 (scripts/results/stability.md) and never diverged in the
    committed 10-seed table."""

    def __init__(self, alpha: float, warn_above: float, warn_fraction: float, *, warns: bool = True) -> None:
        self.warns = warns
        self.alpha = float(alpha)
        self.warn_above = float(warn_above)
        self.warn_fraction = float(warn_fraction)
        self.warned = False

    def observe(
        self,
        server_round: int,
        lambda_max: Sequence[float],
        seconds: Sequence[float],
        guarded: Sequence[float] | None = None,
    ) -> RoundStability:
        """The round's metrics from the monitored clients' ``lambda_max`` (non-finite values count as past every
        limit: a client whose Hessian product overflows is not stable) and the probes' ``seconds``:

        * ``stability/alpha_lambda_max``, ``…_max``: the clients' mean and largest α·λ_max (finite values);
        * ``stability/fraction_above_1``, ``…_2``: the share of clients with α·λ_max > 1 (reversal), > 2 (growth);
        * ``stability/safe_alpha``: ``1 / max λ_max``, the α that keeps every monitored client's α·λ_max ≤ 1;
        * ``time/stability_s``: the probes' mean time;
        * with the safeguard (``guarded``: each client's inner step): ``stability/guarded_fraction``, the share of
          clients whose α it lowered, and ``stability/guarded_alpha``, their mean inner step.
        """
        scaled = [self.alpha * float(v) if math.isfinite(float(v)) else math.inf for v in lambda_max]
        finite = [s for s in scaled if math.isfinite(s)]
        n = len(scaled)
        metrics = {
            TAG_PREFIX + "alpha_lambda_max": sum(finite) / len(finite) if finite else math.nan,
            TAG_PREFIX + "alpha_lambda_max_max": max(finite) if finite else math.nan,
            TAG_PREFIX + "fraction_above_1": sum(s > 1 for s in scaled) / n,
            TAG_PREFIX + "fraction_above_2": sum(s > 2 for s in scaled) / n,
            TAG_PREFIX + "safe_alpha": safe_alpha(lambda_max),
            "time/stability_s": sum(seconds) / len(seconds) if seconds else math.nan,
        }
        if guarded is not None:
            metrics[TAG_PREFIX + "guarded_fraction"] = sum(a < self.alpha for a in guarded) / len(guarded)
            metrics[TAG_PREFIX + "guarded_alpha"] = sum(guarded) / len(guarded)
        share = sum(s > self.warn_above for s in scaled) / n
        warning = None
        if self.warns and share >= self.warn_fraction and not self.warned:
            warning = (
                f"round {server_round}: α·λ_max > {self.warn_above:g} on {sum(s > self.warn_above for s in scaled)} "
                f"of {n} monitored clients (largest {max(scaled):.3g}): at alpha={self.alpha:g} the meta-update's "
                f"factor (I − αH) amplifies the gradient along the sharpest direction and the run may diverge; "
                f"alpha ≤ {metrics[TAG_PREFIX + 'safe_alpha']:.3g} keeps α·λ_max ≤ 1 on every monitored client "
                f"(docs/curvature.md, Stability)"
            )
        self.warned = share >= self.warn_fraction
        histograms = {TAG_PREFIX + "alpha_lambda_max_per_client": finite}
        return RoundStability(metrics, histograms, warning)


def guarded_alpha(alpha: float, lambda_max: float, c: float) -> float:
    """The safeguard's inner step ``min(α, c / λ_max)``: α where λ_max is not positive or not finite (a probe that
    failed leaves the paper's step)."""
    if math.isfinite(lambda_max) and lambda_max > 0:
        return min(alpha, c / lambda_max)
    return alpha


def safe_alpha(lambda_max: Sequence[float], target: float = 1.0) -> float:
    """The largest α with ``α·λ ≤ target`` for every finite positive λ of ``lambda_max`` (inf where none is
    positive; NaN where none is finite)."""
    finite = [float(v) for v in lambda_max if math.isfinite(float(v))]
    if not finite:
        return math.nan
    top = max(finite)
    return target / top if top > 0 else math.inf
