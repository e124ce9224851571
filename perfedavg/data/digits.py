"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes): real data, available offline."""

from __future__ import annotations

import functools

import numpy as np
import torch

from perfedavg.data.partition import label_partition
from perfedavg.data.types import ClientData, split_train_test

IMAGE_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images ``[1797, 1, 8, 8]`` scaled to [0, 1] (float32) and labels ``[1797]`` (int64)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, *IMAGE_SHAPE)
    return x, bunch.target.astype(np.int64)


def smallest_client(num_clients: int, labels_per_client: int, seed: int) -> int:
    """Examples held by the smallest client of the label split (before its train/test split)."""
    parts = label_partition(load_digits_arrays()[1], num_clients, labels_per_client, seed)
    return min(len(p) for p in parts)


def max_clients(labels_per_client: int, min_examples: int, seed: int) -> int:
    """The most clients (binary search) for which every client holds at least ``min_examples`` examples."""
    lo, hi = 1, max(1, len(load_digits_arrays()[1]) // min_examples)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if smallest_client(mid, labels_per_client, seed) >= min_examples:
            lo = mid
        else:
            hi = mid - 1
    return lo


def make_digits_client(
    client_id: int, *, seed: int, num_clients: int, labels_per_client: int, test_fraction: float
) -> ClientData:
    """Client ``client_id``'s examples of the label split (exactly ``labels_per_client`` labels), train/test split."""
    x, y = load_digits_arrays()
    parts = label_partition(y, num_clients, labels_per_client, seed)
    idx = torch.from_numpy(parts[client_id])
    gen = torch.Generator().manual_seed(seed * 1_000_003 + client_id)
    return split_train_test(client_id, torch.from_numpy(x)[idx], torch.from_numpy(y)[idx], test_fraction, gen)
