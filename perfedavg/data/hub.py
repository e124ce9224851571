"""Image data sets through Flower Datasets (``flwr_datasets.FederatedDataset``): MNIST, Fashion-MNIST, CIFAR-10.

``FederatedDataset`` calls ``datasets.load_dataset``: from the Hugging Face hub when online (cached under
``~/.cache/huggingface`` or ``dataset.cache_dir``), from that cache offline (``HF_HUB_OFFLINE=1``), or from local
files when ``dataset.path`` names a directory that ``load_dataset`` understands: parquet files
(``train-*.parquet`` or ``train/*.parquet``) or an image folder (``train/<label>/<image>.png``). The ``train``
split is shuffled with the seed and split by the configured partitioner; each client then holds out its own test
split. Nothing here imports Flower's framework, only its data library.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from perfedavg.data.partition import make_partitioner
from perfedavg.data.types import ClientData, split_generator, split_train_test


@dataclass(frozen=True)
class HubSource:
    """Where a named image data set lives on the Hugging Face hub and what its columns are called."""

    hub_id: str
    image_key: str
    label_key: str = "label"


#: dataset name → its hub source (the ids Flower's own examples use).
SOURCES: dict[str, HubSource] = {
    "mnist": HubSource("ylecun/mnist", "image"),
    "fashion_mnist": HubSource("zalando-datasets/fashion_mnist", "image"),
    "cifar10": HubSource("uoft-cs/cifar10", "img"),
}

#: The split that is partitioned across clients.
SPLIT = "train"


class DataUnavailableError(RuntimeError):
    """The data set is neither cached nor reachable (or the local path cannot be read)."""


def source_of(params: Mapping[str, Any]) -> str:
    """The ``dataset=`` argument for ``FederatedDataset``: the local ``path`` if set, else the hub id."""
    return str(params.get("path") or SOURCES[params["name"]].hub_id)


def how_to_get(params: Mapping[str, Any]) -> str:
    name = params["name"]
    if params.get("path"):
        return (
            f"dataset.path={params['path']} must be a directory with parquet files (train-*.parquet or "
            f"train/*.parquet) or an image folder (train/<label>/<image>.png)"
        )
    return (
        f"download it once while online: `python -m perfedavg.data.fetch {name}` (later runs read the cache, "
        f"also with HF_HUB_OFFLINE=1), or set dataset.path to a local copy (parquet files or an image folder)"
    )


@functools.lru_cache(maxsize=4)
def _federated(params_json: str, num_clients: int, seed: int) -> Any:
    from flwr_datasets import FederatedDataset

    params = json.loads(params_json)
    kwargs: dict[str, Any] = {"cache_dir": params["cache_dir"]} if params.get("cache_dir") else {}
    fds = FederatedDataset(
        dataset=source_of(params),
        partitioners={SPLIT: make_partitioner(params["partition"], num_clients, seed, _label_key(params))},
        shuffle=True,
        seed=seed,
        **kwargs,
    )
    try:
        fds.load_split(SPLIT)  # loads (or downloads) now, so a missing data set fails here
    except Exception as e:  # datasets raises many types for "not there"; all mean the same to the user
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataUnavailableError(
            f"dataset={params['name']}: cannot load {source_of(params)!r} ({type(e).__name__}: {first[:200]}); "
            + how_to_get(params)
        ) from None
    return fds


def _label_key(params: Mapping[str, Any]) -> str:
    return str(params.get("label_key") or SOURCES[params["name"]].label_key)


def federated_dataset(params: Mapping[str, Any], num_clients: int, seed: int) -> Any:
    """The (per-process cached) ``FederatedDataset`` for ``params`` (a dataset config plus its ``partition``)."""
    return _federated(json.dumps(dict(params), sort_keys=True), num_clients, seed)


def image_column(params: Mapping[str, Any], columns: list[str]) -> str:
    """The image column: the configured ``image_key``, else the data set's usual one, else ``image``/``img``."""
    candidates = [params.get("image_key"), SOURCES[params["name"]].image_key, "image", "img"]
    for key in candidates:
        if key and key in columns:
            return str(key)
    raise DataUnavailableError(
        f"dataset={params['name']}: no image column in {source_of(params)!r}; its columns are {columns} "
        f"(set dataset.image_key)"
    )


def to_arrays(rows: Any, image_key: str, label_key: str, input_shape: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Decode a ``datasets.Dataset`` slice to images ``[n, C, H, W]`` in [0, 1] (float32) and labels ``[n]``.

    PIL images are converted to grey (C = 1) or RGB (C = 3); arrays ``[H, W]`` or ``[H, W, C]`` are accepted too.
    """
    channels = input_shape[0]
    mode = "L" if channels == 1 else "RGB"
    images = []
    for item in rows[image_key]:
        if hasattr(item, "convert"):
            item = item.convert(mode)
        images.append(np.asarray(item))
    x = np.stack(images) if images else np.zeros((0, *input_shape[1:]), dtype=np.uint8)
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    x = x.astype(np.float32) / scale
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] == channels and x.shape[1] != channels:
        x = x.transpose(0, 3, 1, 2)
    if list(x.shape[1:]) != list(input_shape):
        raise DataUnavailableError(f"images have shape {list(x.shape[1:])}, dataset.input_shape is {list(input_shape)}")
    return np.ascontiguousarray(x), np.asarray(rows[label_key], dtype=np.int64)


def partition_sizes(params: Mapping[str, Any], num_clients: int, seed: int) -> list[int]:
    """Examples held by each client (before its train/test split). Triggers loading and partitioning."""
    fds = federated_dataset(params, num_clients, seed)
    return [len(fds.load_partition(i, SPLIT)) for i in range(num_clients)]


def make_hub_client(params: Mapping[str, Any], client_id: int, num_clients: int, seed: int) -> ClientData:
    """Client ``client_id``'s partition as tensors, with its own seeded train/test split."""
    fds = federated_dataset(params, num_clients, seed)
    rows = fds.load_partition(client_id, SPLIT)
    try:
        x, y = to_arrays(rows, image_column(params, rows.column_names), _label_key(params), list(params["input_shape"]))
    except DataUnavailableError as e:
        raise DataUnavailableError(f"dataset={params['name']} ({source_of(params)}): {e}") from None
    gen = split_generator(seed, client_id)
    return split_train_test(client_id, torch.from_numpy(x), torch.from_numpy(y), float(params["test_fraction"]), gen)
