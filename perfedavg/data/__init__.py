"""Per-client data: generators, loaders and partitioners (no models, no Flower).

Every data set is exposed through :func:`perfedavg.data.registry.load_clients`, which returns one
:class:`~perfedavg.data.types.ClientData` (its own train and test split) per client, deterministically from the seed.

The names below are loaded on first use (PEP 562): importing a light submodule such as
:mod:`perfedavg.data.partition` (the config's checks do) then does not import PyTorch through the registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: Exported name → the submodule that defines it.
_HOMES = {
    "DATASETS": "registry",
    "DataError": "registry",
    "check_dataset": "registry",
    "data_fingerprint": "registry",
    "data_params": "registry",
    "load_client": "registry",
    "load_clients": "registry",
    "ClientData": "types",
}

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


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
