"""Data set registry: a data config (the ``dataset`` mapping plus its ``partition``) → per-client data.

Two kinds of data set: *labelled pools* (digits, mnist, fashion_mnist, cifar10) are split across clients by a
partitioner (``partition=iid|dirichlet|pathological|shard|paper``); *generated* sets (regression, synthetic) are drawn
per client from the seed and take ``partition=natural``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from perfedavg.data import digits, hub, regression, synthetic, text
from perfedavg.data.partition import GENERATED_DATASETS, LABEL_PARTITIONS, NATURAL, NATURAL_DATASETS, TEXT_DATASETS
from perfedavg.data.types import ClientData, hold_out_validation, validation_generator
from perfedavg.errors import UserError

log = logging.getLogger("perfedavg")

#: The least number of examples a client needs: at least one to train on and one to test on, and a few more.
MIN_EXAMPLES_PER_CLIENT = 10


class DataError(UserError, ValueError):
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


def _synthetic(client_id: int, num_clients: int, seed: int, p: Mapping[str, Any]) -> ClientData:
    return synthetic.make_synthetic_client(
        client_id,
        seed=seed,
        alpha=float(p["synthetic_alpha"]),
        beta=float(p["synthetic_beta"]),
        num_features=int(p["input_shape"][0]),
        num_classes=int(p["num_classes"]),
        test_fraction=float(p["test_fraction"]),
    )


def _digits(client_id: int, num_clients: int, seed: int, p: Mapping[str, Any]) -> ClientData:
    return digits.make_digits_client(
        client_id, seed=seed, num_clients=num_clients, partition=p["partition"], test_fraction=float(p["test_fraction"])
    )


def _hub(client_id: int, num_clients: int, seed: int, p: Mapping[str, Any]) -> ClientData:
    with _as_data_errors(p):
        return hub.make_hub_client(p, client_id, num_clients, seed)


def _text(client_id: int, num_clients: int, seed: int, p: Mapping[str, Any]) -> ClientData:
    try:
        return text.make_text_client(p, client_id, num_clients, seed)
    except text.TextDataError as e:
        raise DataError(str(e)) from None


def _check_text(num_clients: int, seed: int, p: Mapping[str, Any]) -> None:
    try:
        text.check_text(num_clients, seed, p)
    except text.TextDataError as e:
        raise DataError(str(e)) from None


def _check_regression(num_clients: int, seed: int, p: Mapping[str, Any]) -> None:
    if int(p["samples_per_client"]) < MIN_EXAMPLES_PER_CLIENT:
        raise DataError(
            f"dataset.samples_per_client={p['samples_per_client']}: each client needs at least "
            f"{MIN_EXAMPLES_PER_CLIENT} examples"
        )


def _check_synthetic(num_clients: int, seed: int, p: Mapping[str, Any]) -> None:
    for key in ("synthetic_alpha", "synthetic_beta"):
        if not float(p[key]) >= 0:
            raise DataError(f"dataset.{key}={p[key]}: must be ≥ 0 (a standard deviation)")
    if len(p["input_shape"]) != 1 or int(p["input_shape"][0]) < 1 or int(p["num_classes"]) < 2:
        raise DataError(
            f"dataset=synthetic: input_shape must be [features] and num_classes ≥ 2; got "
            f"input_shape={list(p['input_shape'])}, num_classes={p['num_classes']}"
        )


def _fits(sizes: list[int]) -> bool:
    return min(sizes) >= MIN_EXAMPLES_PER_CLIENT


def _largest_fitting(sizes_for: Callable[[int], list[int]], num_clients: int) -> int | None:
    """The most clients below ``num_clients`` (binary search) for which every client gets enough examples."""
    lo, hi = 0, num_clients - 1
    probing = logging.getLogger("perfedavg.partition")  # what a partitioner says of a trial split is noise here
    level = probing.level
    probing.setLevel(logging.WARNING)
    try:
        while lo < hi:
            mid = (lo + hi + 1) // 2
            try:
                ok = _fits(sizes_for(mid))
            except ValueError:
                ok = False
            lo, hi = (mid, hi) if ok else (lo, mid - 1)
    finally:
        probing.setLevel(level)
    return lo or None


def _check_sizes(sizes_for: Callable[[int], list[int]], p: Mapping[str, Any], num_clients: int) -> None:
    try:
        sizes = sizes_for(num_clients)
    except ValueError as e:  # the partitioner refuses outright, e.g. more clients than examples
        fits = _largest_fitting(sizes_for, num_clients)
        hint = f"the largest that works is num_clients={fits}" if fits else "no number of clients works"
        raise DataError(
            f"num_clients={num_clients}: dataset={p['name']} cannot be split into that many clients with "
            f"partition={p['partition']['name']} ({str(e).rstrip('.')}); {hint}"
        ) from None
    if _fits(sizes):
        return
    small = [i for i, n in enumerate(sizes) if n < MIN_EXAMPLES_PER_CLIENT]
    fits = _largest_fitting(sizes_for, num_clients)
    hint = f"num_clients={fits} works" if fits else "no number of clients works"
    raise DataError(
        f"num_clients={num_clients}: with dataset={p['name']} and partition={p['partition']['name']}, "
        f"{len(small)} client(s) get fewer than {MIN_EXAMPLES_PER_CLIENT} examples (client {small[0]}: "
        f"{sizes[small[0]]}); {hint}, or choose another partition"
    )


@contextlib.contextmanager
def _as_data_errors(p: Mapping[str, Any]) -> Iterator[None]:
    """Report what loading or partitioning raises as a :class:`DataError` naming the data set and partition."""
    try:
        yield
    except DataError:
        raise
    except hub.DataUnavailableError as e:
        raise DataError(str(e)) from None
    except ValueError as e:  # the partitioners' own checks (e.g. Dirichlet cannot reach min_partition_size)
        raise DataError(f"partition={p['partition']['name']} of dataset={p['name']}: {e}") from None


def _check_digits(num_clients: int, seed: int, p: Mapping[str, Any]) -> None:
    with _as_data_errors(p):
        _check_sizes(lambda n: [len(i) for i in digits.digits_partition(p["partition"], n, seed)], p, num_clients)


def _check_hub(num_clients: int, seed: int, p: Mapping[str, Any]) -> None:
    with _as_data_errors(p):
        hub.refresh_split_key(p)  # the driver looks at the data itself; workers then trust what it recorded
        hub.validate_split(p)  # labels in range, finite pixels: before a partitioner or a client sees them
        _check_sizes(lambda n: hub.partition_sizes(p, n, seed), p, num_clients)
        hub.make_hub_client(p, 0, num_clients, seed)  # column names and image shape (decoded once per machine)


#: name → (make one client, check the federation fits the data)
DATASETS: dict[str, tuple[Callable[..., ClientData], Callable[[int, int, Mapping[str, Any]], None]]] = {
    "regression": (_regression, _check_regression),
    "synthetic": (_synthetic, _check_synthetic),
    "digits": (_digits, _check_digits),
    "mnist": (_hub, _check_hub),
    "fashion_mnist": (_hub, _check_hub),
    "cifar10": (_hub, _check_hub),
    "shakespeare": (_text, _check_text),
    "text": (_text, _check_text),
}


def _check_partition(params: Mapping[str, Any]) -> None:
    name, part = params["name"], params["partition"]["name"]
    if name in NATURAL_DATASETS and part != NATURAL:
        how = "is generated per client" if name in GENERATED_DATASETS else "is one client per row by nature"
        raise DataError(f"partition={part}: dataset={name} {how}; it takes partition={NATURAL}")
    if name not in NATURAL_DATASETS and part not in LABEL_PARTITIONS:
        raise DataError(
            f"partition={part}: dataset={name} is split across clients; use one of: {', '.join(LABEL_PARTITIONS)}"
        )


#: Flower's PathologicalPartitioner warns in its own parameter names when some classes go to no client.
_UNUSED_CLASSES = re.compile(r"Classes: (\[.*?\]) will NOT be used")


@contextlib.contextmanager
def _partitioner_warnings(params: Mapping[str, Any] | None) -> Iterator[None]:
    """Silence the partitioners' UserWarnings; with ``params`` (the driver's check), say it once in our terms."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if params is None:
        return
    for found in {m.group(1) for w in caught if (m := _UNUSED_CLASSES.search(str(w.message)))}:
        part = params["partition"]
        log.warning(
            "partition=%s with %s: classes %s are held by no client (each client gets %s classes)",
            part["name"],
            params["name"],
            found,
            part.get("classes_per_client"),
        )


def check_dataset(params: Mapping[str, Any], num_clients: int, seed: int) -> None:
    """Raise :class:`DataError` if the data set cannot give ``num_clients`` clients their data.

    ``params`` is the ``dataset`` config with the ``partition`` config under the key ``partition``.
    Hub data sets are loaded (from the cache or the hub) and partitioned here, so a missing data set fails early.
    """
    name = params["name"]
    if name not in DATASETS:
        raise DataError(f"dataset={name!r} is not one of: {', '.join(DATASETS)}")
    _check_partition(params)
    with _partitioner_warnings(params):
        DATASETS[name][1](num_clients, seed, params)


def data_fingerprint(params: Mapping[str, Any]) -> str:
    """What identifies the data of a run besides its config (after :func:`check_dataset`): the contents digest of a
    local ``dataset.path`` or the hub download's fingerprint; bundled and generated data sets are fixed by their
    config and the installed code (``bundled``/``generated``)."""
    if params["name"] in ("mnist", "fashion_mnist", "cifar10"):
        return hub.data_fingerprint(params)
    if params["name"] in TEXT_DATASETS:
        return text.data_fingerprint(params)
    return "generated" if params["name"] in GENERATED_DATASETS else "bundled"


def load_client(params: Mapping[str, Any], client_id: int, num_clients: int, seed: int) -> ClientData:
    """Client ``client_id``'s train/test data, and its validation split held out of the training data when
    ``dataset.val_fraction`` > 0 (all deterministic in ``seed``)."""
    if params["name"] not in DATASETS:
        raise DataError(f"dataset={params['name']!r} is not one of: {', '.join(DATASETS)}")
    if not 0 <= client_id < num_clients:
        raise DataError(f"client id {client_id} is outside 0..{num_clients - 1}")
    with _partitioner_warnings(None):
        data = DATASETS[params["name"]][0](client_id, num_clients, seed, params)
    if params["name"] in TEXT_DATASETS:  # validation is held out by position there (perfedavg.data.text)
        return data
    try:
        return hold_out_validation(data, float(params.get("val_fraction", 0.0)), validation_generator(seed, client_id))
    except ValueError as e:
        raise DataError(str(e)) from None


def load_clients(params: Mapping[str, Any], num_clients: int, seed: int) -> list[ClientData]:
    """Every client's data, in client-id order (after :func:`check_dataset`)."""
    check_dataset(params, num_clients, seed)
    return [load_client(params, i, num_clients, seed) for i in range(num_clients)]


def data_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The data config of a resolved run config: its ``dataset`` mapping with ``partition`` folded in."""
    return {**cfg["dataset"], "partition": cfg["partition"]}
