"""FedProx's Synthetic(α, β) classification data (Li et al., MLSys 2020; also used by pFedMe), generated offline.

User k: ``n_k = ⌊LogNormal(4, 2)⌋ + 50`` examples; ``u_k ~ N(0, α)``, ``B_k ~ N(0, β)``;
``W_k ~ N(u_k, 1)`` of shape ``[d, C]``, ``b_k ~ N(u_k, 1)`` of shape ``[C]``; ``v_k ~ N(B_k, 1)`` of shape ``[d]``;
``x ~ N(v_k, Σ)`` with ``Σ = diag(j^-1.2)``, j = 1..d; ``y = argmax(softmax(x W_k + b_k))``. α controls how much the
users' models differ, β how much their inputs differ. FedProx uses d = 60 features and C = 10 classes.

FedProx draws every user from one global NumPy stream; here user k draws from its own stream seeded by
``(seed, k)``: the same distribution, and a client can build its own data without generating everyone else's.
"""

from __future__ import annotations

import numpy as np
import torch

from perfedavg.data.types import ClientData, split_generator, split_train_test


def synthetic_user(
    user: int, *, seed: int, alpha: float, beta: float, num_features: int = 60, num_classes: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """User ``user``'s examples ``x [n_k, d]`` (float32) and labels ``y [n_k]`` (int64). Cost ``O(n_k·d·C)``."""
    rng = np.random.default_rng([seed, user])
    n = int(rng.lognormal(4, 2)) + 50
    u = rng.normal(0, alpha)
    shift = rng.normal(0, beta)
    w = rng.normal(u, 1, (num_features, num_classes))
    b = rng.normal(u, 1, num_classes)
    v = rng.normal(shift, 1, num_features)
    std = np.arange(1, num_features + 1, dtype=np.float64) ** (-1.2 / 2)
    x = v + rng.standard_normal((n, num_features)) * std
    y = np.argmax(x @ w + b, axis=1)  # softmax is monotone: argmax of the logits
    return x.astype(np.float32), y.astype(np.int64)


def make_synthetic_client(
    client_id: int,
    *,
    seed: int,
    alpha: float,
    beta: float,
    num_features: int,
    num_classes: int,
    test_fraction: float,
) -> ClientData:
    """Client ``client_id``'s Synthetic(α, β) data with its own seeded train/test split."""
    x, y = synthetic_user(
        client_id, seed=seed, alpha=alpha, beta=beta, num_features=num_features, num_classes=num_classes
    )
    gen = split_generator(seed, client_id)
    return split_train_test(client_id, torch.from_numpy(x), torch.from_numpy(y), test_fraction, gen)
