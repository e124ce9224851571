"""Label-skewed (non-IID) partitioning of a labelled data set across clients."""

from __future__ import annotations

import numpy as np


def label_partition(labels: np.ndarray, num_clients: int, labels_per_client: int, seed: int) -> list[np.ndarray]:
    """Pathological non-IID split: each client holds exactly ``labels_per_client`` distinct labels.

    Labels are dealt cyclically from a seeded permutation of the classes (client i gets classes
    ``perm[(i·k + j) mod C]``, j < k), so every class is held by ⌊n·k/C⌋ or ⌈n·k/C⌉ clients; each class's examples
    are shuffled (seeded) and split evenly among its holders. Returns one sorted index array per client;
    no example is used twice.
    """
    classes = np.unique(labels)
    if not 1 <= labels_per_client <= len(classes):
        raise ValueError(f"labels_per_client={labels_per_client} must be between 1 and {len(classes)}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(classes)
    k = labels_per_client
    held = [[perm[(i * k + j) % len(classes)] for j in range(k)] for i in range(num_clients)]
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in classes:
        holders = [i for i in range(num_clients) if c in held[i]]
        if not holders:
            continue
        examples = rng.permutation(np.flatnonzero(labels == c))
        for i, chunk in zip(holders, np.array_split(examples, len(holders))):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for p in parts]
