"""Heterogeneous synthetic linear-regression tasks for the ANN (3 features → 5 targets), generated offline.

Client ``i`` draws ``x ~ N(μ_i, I₃)`` and ``y = x W_i + b_i + ε`` with ``ε ~ N(0, noise²)``, where
``W_i = W₀ + heterogeneity · U_i`` and ``b_i = b₀ + heterogeneity · u_i`` perturb one shared task (W₀, b₀) with
client-specific Gaussian draws, and ``μ_i ~ N(0, (heterogeneity/2)² I)`` shifts each client's inputs.
Weights are drawn with variance 1/3 and biases with standard deviation 1/2, so targets have roughly unit variance
per unit of heterogeneity and the default step sizes are stable.
With ``heterogeneity = 0`` all clients share one task; larger values make personalization matter more.
Everything is drawn from ``torch.Generator``\\ s seeded by ``(seed, client id)``: the same seed gives the same data.
"""

from __future__ import annotations

import torch

from perfedavg.data.types import ClientData, split_train_test

NUM_FEATURES = 3
NUM_TARGETS = 5


def _generator(seed: int, *stream: int) -> torch.Generator:
    # A distinct, reproducible stream per (seed, purpose, client): mix the integers into one 63-bit seed.
    value = seed & 0x7FFFFFFF
    for s in stream:
        value = (value * 1_000_003 + s + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def make_regression_client(
    client_id: int,
    *,
    seed: int,
    samples_per_client: int,
    heterogeneity: float,
    noise: float,
    test_fraction: float,
) -> ClientData:
    """Client ``client_id``'s task and data (float32): ``x [n, 3]``, ``y [n, 5]``, split into train/test."""
    shared = _generator(seed, 0)
    w_scale, b_scale = NUM_FEATURES**-0.5, 0.5
    w0 = w_scale * torch.randn(NUM_FEATURES, NUM_TARGETS, generator=shared)
    b0 = b_scale * torch.randn(NUM_TARGETS, generator=shared)
    own = _generator(seed, 1, client_id)
    w = w0 + heterogeneity * w_scale * torch.randn(NUM_FEATURES, NUM_TARGETS, generator=own)
    b = b0 + heterogeneity * b_scale * torch.randn(NUM_TARGETS, generator=own)
    mu = 0.5 * heterogeneity * torch.randn(NUM_FEATURES, generator=own)
    x = mu + torch.randn(samples_per_client, NUM_FEATURES, generator=own)
    y = x @ w + b + noise * torch.randn(samples_per_client, NUM_TARGETS, generator=own)
    return split_train_test(client_id, x, y, test_fraction, _generator(seed, 2, client_id))
