"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes): real data, available offline."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from perfedavg.data.partition import partition_indices
from perfedavg.data.types import ClientData, split_generator, split_train_test

IMAGE_SHAPE = (1, 8, 8)


@functools.lru_cache(maxsize=1)
def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Images ``[1797, 1, 8, 8]`` scaled to [0, 1] (float32) and labels ``[1797]`` (int64)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, *IMAGE_SHAPE)
    return x, bunch.target.astype(np.int64)


@functools.lru_cache(maxsize=8)
def _parts(partition_json: str, num_clients: int, seed: int) -> list[np.ndarray]:
    return partition_indices(load_digits_arrays()[1], json.loads(partition_json), num_clients, seed)


def digits_partition(partition: Mapping[str, Any], num_clients: int, seed: int) -> list[np.ndarray]:
    """Image indices of each client under the ``partition`` config (cached per process)."""
    return _parts(json.dumps(dict(partition), sort_keys=True), num_clients, seed)


def make_digits_client(
    client_id: int, *, seed: int, num_clients: int, partition: Mapping[str, Any], test_fraction: float
) -> ClientData:
    """Client ``client_id``'s images under the ``partition`` scheme, with its own seeded train/test split."""
    x, y = load_digits_arrays()
    idx = torch.from_numpy(digits_partition(partition, num_clients, seed)[client_id])
    gen = split_generator(seed, client_id)
    return split_train_test(client_id, torch.from_numpy(x)[idx], torch.from_numpy(y)[idx], test_fraction, gen)
