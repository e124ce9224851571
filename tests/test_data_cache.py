"""Decoding once, caching on the machine, and keeping every client's tensors: perfedavg.data.hub's decoded split,
perfedavg.data.array_cache and perfedavg.data.client_cache.

The expected values come from the slow path the loaders used before: ``datasets`` decoding each row of a client's
partition (``FederatedDataset.load_partition``) through its formatting.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_images import images, write_image_folder, write_parquet
from support import forget_process_caches

from perfedavg.data import array_cache, hub, load_client
from perfedavg.data.client_cache import ClientCache, bound_bytes, nbytes
from perfedavg.data.types import split_generator, split_train_test

CASES = [
    ("mnist", "parquet", (28, 28), [1, 28, 28], "image", {"name": "paper", "images_per_class": 4}),
    ("fashion_mnist", "image folder", (28, 28), [1, 28, 28], "image", {"name": "iid"}),
    (
        "cifar10",
        "parquet",
        (32, 32, 3),
        [3, 32, 32],
        "img",
        {"name": "dirichlet", "alpha": 1.0, "min_partition_size": 5},
    ),
]


def params_for(tmp_path: Path, name: str, layout: str, shape, input_shape, key, partition) -> dict:
    x, y = images(16, shape, seed=3)
    root = (
        write_parquet(tmp_path / "data", x, y, image_key=key)
        if layout == "parquet"
        else write_image_folder(tmp_path / "data", x, y)
    )
    return {
        "name": name,
        "path": str(root),
        "cache_dir": str(tmp_path / "hf"),
        "input_shape": input_shape,
        "test_fraction": 0.25,
        "partition": partition,
    }


def fresh_decode(params: dict, client_id: int, num_clients: int, seed: int):
    """The client as Flower Datasets alone gives it: FederatedDataset partition, rows decoded one by one."""
    from flwr_datasets import FederatedDataset

    from perfedavg.data.partition import make_partitioner

    fds = FederatedDataset(
        dataset=params["path"],
        shuffle=True,
        seed=seed,
        cache_dir=params["cache_dir"],
        partitioners={"train": make_partitioner(params["partition"], num_clients, seed)},
    )
    rows = fds.load_partition(client_id, "train")
    key = hub.image_column(params, rows.column_names)
    mode = "L" if params["input_shape"][0] == 1 else "RGB"
    x = np.stack([np.asarray(img.convert(mode)) for img in rows[key]]).astype(np.float32) / 255.0
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = torch.tensor(list(rows["label"]), dtype=torch.int64)
    return split_train_test(
        client_id,
        torch.from_numpy(np.ascontiguousarray(x)),
        y,
        params["test_fraction"],
        split_generator(seed, client_id),
    )


@pytest.mark.parametrize(("name", "layout", "shape", "input_shape", "key", "partition"), CASES)
def test_cached_clients_equal_a_fresh_row_by_row_decode(
    tmp_path, own_cache, name, layout, shape, input_shape, key, partition
) -> None:
    params = params_for(tmp_path, name, layout, shape, input_shape, key, partition)
    for cid in range(4):
        got, want = load_client(params, cid, 4, seed=1), fresh_decode(params, cid, 4, seed=1)
        for field in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(got, field), getattr(want, field)), (cid, field)


def test_each_image_is_decoded_once_per_process_and_once_per_machine(tmp_path, own_cache) -> None:
    params = params_for(tmp_path, *CASES[0][:5], {"name": "iid"})
    before = hub.decoded_images
    first = [load_client(params, cid, 5, seed=0) for cid in range(5)]
    assert hub.decoded_images - before == 160  # every image of the split, once, however many clients ask
    [load_client(params, cid, 5, seed=0) for cid in range(5)]
    assert hub.decoded_images - before == 160
    assert len(list(own_cache.glob("mnist-train-*/images.npy"))) == 1
    forget_process_caches()  # another process on the same machine: reads the stored arrays, decodes nothing
    again = [load_client(params, cid, 5, seed=0) for cid in range(5)]
    assert hub.decoded_images - before == 160
    assert all(torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test) for a, b in zip(first, again))
    assert isinstance(hub.decoded_split(params)[0], np.memmap)  # shared through the page cache


def test_later_processes_find_the_split_without_loading_it_through_datasets(tmp_path, own_cache, monkeypatch) -> None:
    params = params_for(tmp_path, *CASES[0][:5], {"name": "iid"})
    first = load_client(params, 1, 3, seed=0)
    forget_process_caches()
    loads = []
    real = hub._load_split.__wrapped__

    def counting(source_json: str, contents: str | None = None):
        loads.append(source_json)
        return real(source_json, contents)

    monkeypatch.setattr(hub, "_load_split", counting)
    assert torch.equal(load_client(params, 1, 3, seed=0).x_train, first.x_train)
    assert loads == []  # the index matched the files: no datasets import, no load
    parquet = Path(params["path"]) / "train-00000-of-00001.parquet"
    os.utime(parquet, (1e9, 2e9))  # only the time changed: the index no longer vouches, so the contents are digested
    forget_process_caches()
    hub.refresh_split_key(params)  # the driver's look at the data before a run
    assert torch.equal(load_client(params, 1, 3, seed=0).x_train, first.x_train)
    assert loads == []  # the same contents: the key recorded with them, no load through datasets, no second decode


def test_an_added_file_is_noticed_despite_the_index(tmp_path, own_cache, monkeypatch) -> None:
    params = params_for(tmp_path, *CASES[0][:5], {"name": "iid"})
    load_client(params, 0, 2, seed=0)
    forget_process_caches()
    loads = []
    real = hub._load_split.__wrapped__
    monkeypatch.setattr(
        hub, "_load_split", lambda source, contents=None: loads.append(source) or real(source, contents)
    )
    load_client(params, 0, 2, seed=0)
    assert loads == []
    x, y = images(2, (28, 28), seed=5)
    write_parquet(tmp_path / "extra", x, y).joinpath("train-00000-of-00001.parquet").rename(
        Path(params["path"]) / "train-00001-of-00002.parquet"
    )
    forget_process_caches()
    assert load_client(params, 0, 2, seed=0).num_train + load_client(params, 0, 2, seed=0).num_test == 90
    assert loads  # a new shard is not hidden by the index


def test_changed_files_are_decoded_again_not_served_stale(tmp_path, own_cache) -> None:
    params = params_for(tmp_path, *CASES[0][:5], {"name": "iid"})
    old = load_client(params, 0, 2, seed=0)
    x, y = images(16, (28, 28), seed=4)  # other pixels, same path
    os.utime(write_parquet(tmp_path / "data", x, y) / "train-00000-of-00001.parquet", (1e9, 2e9))
    forget_process_caches()
    new = load_client(params, 0, 2, seed=0)
    assert not torch.equal(old.x_train, new.x_train)
    assert len(list(own_cache.glob("mnist-train-*"))) == 2


def test_an_unwritable_cache_still_gives_the_data(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(blocker / "cache"))
    forget_process_caches()
    params = params_for(tmp_path, *CASES[0][:5], {"name": "iid"})
    try:
        assert load_client(params, 0, 2, seed=0).num_train > 0
    finally:
        forget_process_caches()


def test_array_cache_builds_once_and_keys_by_content(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(tmp_path))
    calls = []

    def build(value: int):
        def inner():
            calls.append(value)
            return {"a": np.full(3, value), "b": np.arange(value)}

        return inner

    first = array_cache.load_or_build("t", {"k": 1}, build(1))
    second = array_cache.load_or_build("t", {"k": 1}, build(9))
    other = array_cache.load_or_build("t", {"k": 2}, build(2))
    assert calls == [1, 2]
    assert second["a"].tolist() == [1, 1, 1] and other["b"].tolist() == [0, 1]
    assert first["a"].tolist() == second["a"].tolist()
    assert not list(tmp_path.glob(".t-*"))  # no temporary directories left


def test_client_cache_keeps_clients_within_its_bound_least_recently_used_first() -> None:
    def client(cid: int):
        def build():
            x = torch.zeros(10, 25)  # 1,000 bytes of inputs, 80 of labels
            return split_train_test(cid, x, torch.zeros(10, dtype=torch.int64), 0.2, split_generator(0, cid))

        return build

    one = nbytes(client(0)())
    cache = ClientCache(max_bytes=2 * one)
    for cid in (0, 1, 0, 2):  # 0 was used after 1, so 1 is the one dropped
        cache.get(cid, client(cid))
    assert cache.builds == 3 and len(cache) == 2 and cache.held_bytes == 2 * one
    cache.get(0, client(0))
    assert cache.builds == 3
    cache.get(1, client(1))
    assert cache.builds == 4


def test_client_cache_bound_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("PERFEDAVG_CLIENT_CACHE_GB", "0.5")
    assert bound_bytes() == 500_000_000
    monkeypatch.setenv("PERFEDAVG_CLIENT_CACHE_GB", "lots")
    with pytest.raises(ValueError, match="PERFEDAVG_CLIENT_CACHE_GB='lots': must be a number"):
        bound_bytes()
