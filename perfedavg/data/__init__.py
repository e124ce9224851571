"""Per-client data: generators, loaders and partitioners (no models, no Flower).

Every data set is exposed through :func:`perfedavg.data.registry.load_clients`, which returns one
:class:`~perfedavg.data.types.ClientData` (its own train and test split) per client, deterministically from the seed.
"""

from perfedavg.data.registry import (
    DATASETS,
    DataError,
    check_dataset,
    data_fingerprint,
    data_params,
    load_client,
    load_clients,
)
from perfedavg.data.types import ClientData

__all__ = [
    "DATASETS",
    "ClientData",
    "DataError",
    "check_dataset",
    "data_fingerprint",
    "data_params",
    "load_client",
    "load_clients",
]
