"""The Per-FedAvg paper's label split (Fallah, Mokhtari, Ozdaglar 2020, Section 5) as a ``flwr-datasets`` partitioner.

With ``a`` = ``images_per_class`` and the classes split into a lower half L (0–4 of ten) and an upper half U (5–9):

- partitions ``0 .. ⌈n/2⌉-1`` ("group A") each get ``a`` examples of every class in L;
- partitions ``⌈n/2⌉ .. n-1`` ("group B") each get ``a/2`` examples of one class in L and ``2a`` of one class in U.

Group B's classes are dealt from seeded, cyclically tiled permutations of L and of U, so each class serves
⌊|B|/|L|⌋ or ⌈|B|/|L|⌉ of them (balanced demand; a purely random choice can ask one class for more examples than
it has). Examples are drawn without replacement from each class's seeded shuffle: no example is used twice.
Examples of a class nobody asks for, and the rest of each class, stay unused (as in the paper, whose users hold
36,750 of MNIST's 60,000 training images at a = 196).
"""

from __future__ import annotations

import math

import datasets
import numpy as np
from flwr_datasets.partitioner import Partitioner

from perfedavg.data.columns import column_array


class PaperPartitioner(Partitioner):
    """Per-FedAvg's split of a labelled ``datasets.Dataset`` into ``num_partitions`` partitions.

    Cost: one pass over the label column (``O(N)``) the first time a partition is requested; every partition
    afterwards is an index ``select``.
    """

    def __init__(self, num_partitions: int, partition_by: str, images_per_class: int, seed: int | None = 42) -> None:
        super().__init__()
        if num_partitions < 2:
            raise ValueError(f"num_partitions={num_partitions}: the paper's split needs at least 2 partitions")
        if images_per_class < 2 or images_per_class % 2:
            raise ValueError(f"images_per_class={images_per_class}: must be an even number ≥ 2 (group B gets a/2)")
        self._num_partitions = num_partitions
        self._partition_by = partition_by
        self._a = images_per_class
        self._seed = seed
        self._indices: list[np.ndarray] | None = None

    @property
    def num_partitions(self) -> int:
        return self._num_partitions

    @property
    def group_a_size(self) -> int:
        """Partitions ``0 .. group_a_size-1`` hold every lower class; the others one lower and one upper class."""
        return math.ceil(self._num_partitions / 2)

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        if not 0 <= partition_id < self._num_partitions:
            raise ValueError(f"partition_id={partition_id} is outside 0..{self._num_partitions - 1}")
        if self._indices is None:
            self._indices = self._assign()
        return self.dataset.select(self._indices[partition_id])

    def _wanted(self, classes: np.ndarray, rng: np.random.Generator) -> list[list[tuple[int, int]]]:
        if len(classes) < 2:
            raise ValueError(f"the paper's split needs at least 2 classes; the data has {len(classes)}")
        lower, upper = classes[: len(classes) // 2], classes[len(classes) // 2 :]
        n_b = self._num_partitions - self.group_a_size
        deal_low = rng.permutation(np.resize(rng.permutation(lower), n_b)) if n_b else lower[:0]
        deal_up = rng.permutation(np.resize(rng.permutation(upper), n_b)) if n_b else upper[:0]
        group_a = [[(int(c), self._a) for c in lower] for _ in range(self.group_a_size)]
        group_b = [[(int(lo), self._a // 2), (int(up), 2 * self._a)] for lo, up in zip(deal_low, deal_up)]
        return group_a + group_b

    def _assign(self) -> list[np.ndarray]:
        labels = column_array(self.dataset, self._partition_by)
        rng = np.random.default_rng(self._seed)
        wanted = self._wanted(np.unique(labels), rng)
        pools = {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
        need: dict[int, int] = {}
        for c, k in (pair for per_partition in wanted for pair in per_partition):
            need[c] = need.get(c, 0) + k
        for c, n in need.items():
            if n > len(pools[c]):
                raise ValueError(
                    f"the paper's split with images_per_class={self._a} and {self._num_partitions} partitions "
                    f"needs {n} examples of class {c}; the data has {len(pools[c])}"
                )
        taken = dict.fromkeys(pools, 0)  # each class's shuffled pool is consumed from the front
        parts: list[np.ndarray] = []
        for per_partition in wanted:
            chosen = []
            for c, k in per_partition:
                chosen.append(pools[c][taken[c] : taken[c] + k])
                taken[c] += k
            parts.append(np.sort(np.concatenate(chosen).astype(np.int64)))
        return parts
