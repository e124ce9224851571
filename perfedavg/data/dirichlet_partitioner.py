"""Dirichlet label skew that reaches its minimum partition size at any number of clients.

Flower's ``DirichletPartitioner`` draws each class's split over the clients from Dirichlet(α), and redraws all of
it (at most 10 times) until every client holds ``min_partition_size`` examples; past that it refuses. With many
clients a client short of the minimum is almost certain in every draw: 1,000 MNIST clients at α = 0.5 and a minimum
of 10 were refused. This partitioner makes the same draws (bit for bit: the same generator calls in the same order,
so every partition Flower's rule accepts is unchanged) and then applies ``min_size_rule``:

- ``redraw`` (default): Flower's rule, up to 10 redraws; if none reaches the minimum, the last draw is **topped
  up** instead of refused;
- ``top_up``: the first draw is topped up at once (no redraws: with thousands of clients they only cost time).

Topping up: while a client is short of the minimum, it takes one example, chosen at random, from the client that
holds the most (ties: the lowest id). The draws' label skew is kept where it is (only the largest clients give, only
as many examples as the short ones lack), and the minimum holds whenever the data has ``min_partition_size`` examples
per client.
"""

from __future__ import annotations

import heapq
import logging

import numpy as np
from flwr_datasets.partitioner import DirichletPartitioner

from perfedavg.data.columns import column_array

log = logging.getLogger("perfedavg.partition")  # quiet while the checks search for a number of clients that fits

#: The values of ``partition.min_size_rule``.
MIN_SIZE_RULES = ("redraw", "top_up")
#: Redraws under the ``redraw`` rule (Flower's own limit).
MAX_REDRAWS = 10


class MinSizeDirichletPartitioner(DirichletPartitioner):
    """Flower's Dirichlet partitioner (``self_balancing=False``) with a minimum-size rule that never refuses.

    Cost: per draw, one Dirichlet sample of ``num_partitions`` values per class and ``O(N)`` index bookkeeping;
    topping up, ``O(k log n)`` for ``k`` moved examples.
    """

    def __init__(
        self,
        num_partitions: int,
        partition_by: str,
        alpha: float,
        min_partition_size: int,
        min_size_rule: str = "redraw",
        seed: int | None = 42,
    ) -> None:
        if min_size_rule not in MIN_SIZE_RULES:
            raise ValueError(f"min_size_rule={min_size_rule!r}: must be one of {', '.join(MIN_SIZE_RULES)}")
        super().__init__(
            num_partitions=num_partitions,
            partition_by=partition_by,
            alpha=alpha,
            min_partition_size=min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
        self._min_size_rule = min_size_rule
        #: Examples moved by the last top-up (0: the draw reached the minimum by itself).
        self.topped_up = 0

    def _draw(self, targets: np.ndarray, classes: list) -> list[list[int]]:
        """One Dirichlet draw: per class (in sorted order), its examples split by cumulative proportions."""
        parts: list[list[int]] = [[] for _ in range(self._num_partitions)]
        for k in classes:
            members = np.nonzero(targets == k)[0]
            proportions = self._rng.dirichlet(self._alpha)
            cuts = (np.cumsum(proportions) * len(members)).astype(int)[:-1]
            for part, chunk in zip(parts, np.split(members, cuts), strict=True):
                part.extend(chunk.tolist())
        return parts

    def _top_up(self, parts: list[list[int]]) -> int:
        """Move random examples from the largest partitions to those below the minimum; returns how many moved."""
        need = self._min_partition_size
        total = sum(len(p) for p in parts)
        if total < need * len(parts):
            raise ValueError(
                f"{total} examples cannot give {len(parts)} clients partition.min_partition_size={need} each"
            )
        largest = [(-len(p), i) for i, p in enumerate(parts)]  # a max-heap of sizes; stale entries skipped
        heapq.heapify(largest)
        moved = 0
        # While a client is short, another holds more than the minimum (the total allows it), so the donor is never
        # the short client itself and never drops below the minimum.
        for short in [i for i, p in enumerate(parts) if len(p) < need]:
            while len(parts[short]) < need:
                size, donor = heapq.heappop(largest)
                if -size != len(parts[donor]):
                    continue
                pick = int(self._rng.integers(len(parts[donor])))
                parts[donor][pick], parts[donor][-1] = parts[donor][-1], parts[donor][pick]
                parts[short].append(parts[donor].pop())
                heapq.heappush(largest, (-len(parts[donor]), donor))
                moved += 1
            heapq.heappush(largest, (-len(parts[short]), short))
        return moved

    def _determine_partition_id_to_indices_if_needed(self) -> None:
        if self._partition_id_to_indices_determined:
            return
        classes = sorted(self.dataset.unique(self._partition_by))
        targets = column_array(self.dataset, self._partition_by)  # one bulk read (Flower's np.array: row by row)
        draws = 1 if self._min_size_rule == "top_up" else MAX_REDRAWS + 1
        for _ in range(draws):
            parts = self._draw(targets, classes)
            if min(len(p) for p in parts) >= self._min_partition_size:
                break
        else:
            short = sum(len(p) < self._min_partition_size for p in parts)
            self.topped_up = self._top_up(parts)
            log.info(
                "partition=dirichlet: %d of %d clients had fewer than min_partition_size=%d examples after %d "
                "draw(s); topped up with %d examples from the largest clients (partition.min_size_rule=%s)",
                short,
                len(parts),
                self._min_partition_size,
                draws,
                self.topped_up,
                self._min_size_rule,
            )
        for part in parts:
            self._rng.shuffle(part)  # as Flower does: no label runs within a partition
        self._partition_id_to_indices = dict(enumerate(parts))
        self._partition_id_to_indices_determined = True
