"""Data set registry: a dataset config (a mapping with ``name`` and its parameters) → per-client data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from perfedavg.data import digits, regression
from perfedavg.data.types import ClientData

#: The least number of examples a client needs: at least one to train on and one to test on, and a few more.
MIN_EXAMPLES_PER_CLIENT = 10


class DataError(ValueError):
    """The data set cannot serve the requested federation (e.g. more clients than it has examples for)."""


def _regression(client_id: int, num_clients: int, seed: int, p: Mapping[str, Any]) -> ClientData:
    return regression.make_regression_client(
        client_id,
        seed=seed,
        samples_per_client=int(p["samples_per_client"]),
        heterogeneity=float(p["heterogeneity"]),
        noise=float(p["noise"]),
        test_fraction=float(p["test_fraction"]),
    )


def _digits(client_id: int, num_clients: int, seed: int, p: Mapping[str, Any]) -> ClientData:
    return digits.make_digits_client(
        client_id,
        seed=seed,
        num_clients=num_clients,
        labels_per_client=int(p["labels_per_client"]),
        test_fraction=float(p["test_fraction"]),
    )


def _check_regression(num_clients: int, seed: int, p: Mapping[str, Any]) -> None:
    if int(p["samples_per_client"]) < MIN_EXAMPLES_PER_CLIENT:
        raise DataError(
            f"dataset.samples_per_client={p['samples_per_client']}: each client needs at least "
            f"{MIN_EXAMPLES_PER_CLIENT} examples"
        )


def _check_digits(num_clients: int, seed: int, p: Mapping[str, Any]) -> None:
    k = int(p["labels_per_client"])
    if not 1 <= k <= digits.NUM_CLASSES:
        raise DataError(f"dataset.labels_per_client={k}: must be between 1 and {digits.NUM_CLASSES}")
    if digits.smallest_client(num_clients, k, seed) < MIN_EXAMPLES_PER_CLIENT:
        most = digits.max_clients(k, MIN_EXAMPLES_PER_CLIENT, seed)
        raise DataError(
            f"num_clients={num_clients}: dataset=digits has {len(digits.load_digits_arrays()[1])} images, enough for "
            f"at most {most} clients with ≥{MIN_EXAMPLES_PER_CLIENT} examples each "
            f"(labels_per_client={p['labels_per_client']})"
        )


#: name → (make one client, check the federation fits the data)
DATASETS: dict[str, tuple[Callable[..., ClientData], Callable[[int, int, Mapping[str, Any]], None]]] = {
    "regression": (_regression, _check_regression),
    "digits": (_digits, _check_digits),
}


def check_dataset(params: Mapping[str, Any], num_clients: int, seed: int) -> None:
    """Raise :class:`DataError` if the data set cannot give ``num_clients`` clients their data."""
    name = params["name"]
    if name not in DATASETS:
        raise DataError(f"dataset={name!r} is not one of: {', '.join(DATASETS)}")
    DATASETS[name][1](num_clients, seed, params)


def load_client(params: Mapping[str, Any], client_id: int, num_clients: int, seed: int) -> ClientData:
    """Client ``client_id``'s train/test data (deterministic in ``seed``)."""
    if params["name"] not in DATASETS:
        raise DataError(f"dataset={params['name']!r} is not one of: {', '.join(DATASETS)}")
    if not 0 <= client_id < num_clients:
        raise DataError(f"client id {client_id} is outside 0..{num_clients - 1}")
    return DATASETS[params["name"]][0](client_id, num_clients, seed, params)


def load_clients(params: Mapping[str, Any], num_clients: int, seed: int) -> list[ClientData]:
    """Every client's data, in client-id order (after :func:`check_dataset`)."""
    check_dataset(params, num_clients, seed)
    return [load_client(params, i, num_clients, seed) for i in range(num_clients)]
