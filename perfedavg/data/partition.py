"""Partition schemes (the ``partition`` config group) as ``flwr-datasets`` partitioners.

``iid``, ``pathological`` and ``shard`` are Flower's own partitioners; ``dirichlet`` is Flower's with a minimum-size
rule that works for thousands of clients (:mod:`perfedavg.data.dirichlet_partitioner`); ``paper`` is
:class:`~perfedavg.data.paper_partitioner.PaperPartitioner`, written in the same style. ``natural`` means the data
set is already per-client (generated per user) and takes no partitioner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from perfedavg.data.columns import column_array

#: Partition names that split a pooled, labelled data set across clients.
LABEL_PARTITIONS = ("iid", "dirichlet", "pathological", "shard", "paper")
#: The data set is generated per client; nothing to split.
NATURAL = "natural"
#: Data sets generated per client: they take ``partition=natural``; every other data set is a pool to split.
GENERATED_DATASETS = ("regression", "synthetic")
#: Data sets already split into clients by nature (one client per speaker): they take ``partition=natural`` too.
TEXT_DATASETS = ("shakespeare", "text")
#: Every data set that takes ``partition=natural``.
NATURAL_DATASETS = (*GENERATED_DATASETS, *TEXT_DATASETS)
#: The column a partitioner reads labels from.
LABEL = "label"


def make_partitioner(spec: Mapping[str, Any], num_partitions: int, seed: int, partition_by: str = LABEL) -> Any:
    """A fresh ``flwr_datasets.partitioner.Partitioner`` for the ``partition`` config ``spec``.

    ``spec["name"]`` picks the scheme; its parameters: ``alpha``, ``min_partition_size``, ``min_size_rule`` (dirichlet),
    ``classes_per_client`` (pathological), ``shards_per_client`` (shard), ``images_per_class`` (paper).
    Seeded by ``seed``.
    """
    from flwr_datasets.partitioner import IidPartitioner, PathologicalPartitioner, ShardPartitioner

    from perfedavg.data.dirichlet_partitioner import MinSizeDirichletPartitioner
    from perfedavg.data.paper_partitioner import PaperPartitioner

    name = spec["name"]
    if name == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if name == "dirichlet":  # Flower's draws, with a minimum-size rule that does not refuse many clients
        return MinSizeDirichletPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            alpha=float(spec["alpha"]),
            min_partition_size=int(spec["min_partition_size"]),
            min_size_rule=str(spec.get("min_size_rule", "redraw")),
            seed=seed,
        )
    if name == "pathological":
        return PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            num_classes_per_partition=int(spec["classes_per_client"]),
            class_assignment_mode="first-deterministic",
            seed=seed,
        )
    if name == "shard":
        return ShardPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            num_shards_per_partition=int(spec["shards_per_client"]),
            seed=seed,
        )
    if name == "paper":
        return PaperPartitioner(
            num_partitions=num_partitions,
            partition_by=partition_by,
            images_per_class=int(spec["images_per_class"]),
            seed=seed,
        )
    raise ValueError(f"partition={name!r} is not one of: {', '.join(LABEL_PARTITIONS)}")


def partition_indices(
    labels: np.ndarray, spec: Mapping[str, Any], num_partitions: int, seed: int, *, sort: bool = True
) -> list[np.ndarray]:
    """Indices into ``labels`` (``[N]`` ints) of each partition, using the same partitioner as the hub data sets.

    The labels are wrapped in a ``datasets.Dataset`` with a row-index column and shuffled with ``seed`` first
    (as ``FederatedDataset`` does before partitioning), so ``iid`` gets a random split of any ordering.
    Cost: ``O(N)`` plus the partitioner's own; returns one ``int64`` array per partition, sorted, or with
    ``sort=False`` in the order ``FederatedDataset.load_partition`` returns the rows.
    """
    import datasets

    labels = np.asarray(labels, dtype=np.int64)
    # The table FederatedDataset would partition: the data shuffled by Dataset.shuffle(seed=seed), whose permutation
    # is np.random.default_rng(seed).permutation(N). Built already in that order (no indices mapping), so column
    # reads stay fast.
    perm = np.random.default_rng(seed).permutation(len(labels))
    table = datasets.Dataset.from_dict({LABEL: labels[perm], "row": perm})
    partitioner = make_partitioner(spec, num_partitions, seed)
    partitioner.dataset = table
    parts = _bulk_partitions(partitioner, num_partitions)
    if parts is None:  # a partitioner whose assignment is not known here: one load_partition per partition
        parts = [column_array(partitioner.load_partition(i), "row") for i in range(num_partitions)]
    parts = [p.astype(np.int64) for p in parts]
    return [np.sort(p) for p in parts] if sort else parts


def _bulk_partitions(partitioner: Any, num_partitions: int) -> list[np.ndarray] | None:
    """Every partition's ``row`` values in ``load_partition``'s order, from one read of the column and the
    partitioner's own assignment (the positions ``load_partition`` would ``select``), instead of one ``select`` and
    one column read per partition: 10,000 partitions took about 50 s that way. ``None`` for a partitioner whose
    assignment is not one of those known here (tests/test_data.py checks both ways agree for every scheme)."""
    from flwr_datasets.partitioner import IidPartitioner

    partitioner.load_partition(0)  # computes the whole assignment (and runs the partitioner's own checks)
    rows = column_array(partitioner.dataset, "row")  # the partitioner's table: Shard's is sorted by label
    if isinstance(partitioner, IidPartitioner):  # Dataset.shard(contiguous=True): array_split's sizes
        return np.array_split(rows, num_partitions)
    assignment = getattr(partitioner, "_partition_id_to_indices", None) or getattr(partitioner, "_indices", None)
    if assignment is None:
        return None
    return [rows[np.asarray(assignment[i], dtype=np.int64)] for i in range(num_partitions)]
