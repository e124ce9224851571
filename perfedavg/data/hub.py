"""Image data sets from the Hugging Face hub or local files: MNIST, Fashion-MNIST, CIFAR-10.

``datasets.load_dataset`` reads the data set: from the hub when online (cached under ``~/.cache/huggingface`` or
``dataset.cache_dir``), from that cache offline (``HF_HUB_OFFLINE=1``), or from local files when ``dataset.path``
names a directory it understands: parquet files (``train-*.parquet`` or ``train/*.parquet``) or an image folder
(``train/<label>/<image>.png``). This is the call ``flwr_datasets.FederatedDataset`` makes; the split is then
shuffled with the seed and partitioned by the same Flower partitioners, on a labels-only table
(:func:`perfedavg.data.partition.partition_indices`), which yields exactly ``FederatedDataset``'s partitions.

Images are decoded **once per machine**: the first process that needs a split decodes all of it in one pass and
stores it as ``.npy`` arrays (:mod:`perfedavg.data.array_cache`); every process (the driver, Ray actors,
SuperNodes on the same machine) memory-maps that file, so N processes share one copy in the page cache. A client's
tensors are a slice of it, scaled to [0, 1]. Nothing here imports Flower's framework, only its data library.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perfedavg.data import array_cache, hub_reach, integrity
from perfedavg.data.partition import partition_indices
from perfedavg.data.types import ClientData, split_generator, split_train_test

log = logging.getLogger("perfedavg")


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
#: The config keys that say which images are decoded (the partition and the seed do not).
SOURCE_KEYS = ("name", "path", "cache_dir", "image_key", "label_key", "input_shape")

#: Images this process has decoded from their stored form (PNG, JPEG, …); the tests count it.
decoded_images = 0


class DataUnavailableError(RuntimeError):
    """The data set is neither cached nor reachable (or the local path cannot be read)."""


def source_of(params: Mapping[str, Any]) -> str:
    """What ``load_dataset`` is asked for: the local ``path`` if set, else the hub id."""
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


def _source_json(params: Mapping[str, Any]) -> str:
    return json.dumps({k: params.get(k) for k in SOURCE_KEYS}, sort_keys=True)


@functools.lru_cache(maxsize=4)
def _load_split(source_json: str, contents: str | None = None) -> Any:
    """The train split: a local ``path`` of parquet files read directly (:func:`_local_parquet_split`), else through
    ``datasets``. For another local ``path`` (an image folder), ``contents`` (its files' digest) names the
    ``datasets`` cache it is prepared in: ``datasets`` keys its own cache of local files by their modification times,
    so a file replaced with its mtime kept would otherwise be read from the old preparation."""
    import datasets

    from perfedavg.data.log_routing import route_library_logs

    route_library_logs()  # hub retry warnings once, not twice

    params = json.loads(source_json)
    if params.get("path"):
        local = _local_parquet_split(params)
        if local is not None:
            return local
    base = params.get("cache_dir")
    kwargs: dict[str, Any] = {"cache_dir": base} if base else {}
    if params.get("path") and contents:
        root = Path(base or datasets.config.HF_DATASETS_CACHE)
        kwargs["cache_dir"] = str(root / "perfedavg-local" / contents[:16])
    unreachable = None if params.get("path") else hub_reach.unreachable()  # ≤ 3 s instead of ~30 s of retries
    try:
        with hub_reach.offline() if unreachable else contextlib.nullcontext():
            split = datasets.load_dataset(source_of(params), split=SPLIT, **kwargs)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC):
            where = kwargs.get("cache_dir") or datasets.config.HF_DATASETS_CACHE
            raise DataUnavailableError(
                f"dataset={params['name']}: cannot write the Hugging Face datasets cache {where} ({e.strerror}); "
                f"set HF_HOME (or dataset.cache_dir) to a writable directory"
            ) from None
        raise _unavailable(params, e, unreachable) from None
    except Exception as e:  # datasets raises many types for "not there"; all mean the same to the user
        if params.get("path") and (bad := _unreadable_parquet(params)) is not None:
            raise DataUnavailableError(f"dataset={params['name']}: dataset.path={params['path']}: {bad}") from None
        if params.get("path") and _parquet_rows(params) == 0:
            raise DataUnavailableError(f"dataset={params['name']}: {_where(params)} has no rows") from None
        raise _unavailable(params, e, unreachable) from None
    if len(split) == 0:
        raise DataUnavailableError(f"dataset={params['name']}: {_where(params)} has no rows in its {SPLIT} split")
    return split


def _local_parquet_split(params: Mapping[str, Any]) -> Any | None:
    """The train split of a local ``path`` of parquet files, read straight from the files (pyarrow) into memory:
    no intermediate copy (``datasets`` would prepare its own Arrow cache, and anything decoded from a copy damaged
    there would be stored under a valid checksum). The files are those ``datasets`` itself would take for the split
    (its data-file patterns), in its order, with the features of their schema metadata; ``None`` where the split is
    not all parquet (an image folder: ``datasets`` reads it)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.data_files import DataFilesDict, get_data_patterns

    root = str(Path(params["path"]).expanduser())
    try:
        files = list(DataFilesDict.from_patterns(get_data_patterns(root), base_path=root)[SPLIT])
    except Exception:  # noqa: BLE001 - no train split found, or an unreadable directory: datasets' own message
        return None
    if not files or not all(f.endswith(".parquet") for f in files):
        return None
    bad = _unreadable_parquet(params, files)
    if bad is not None:
        raise DataUnavailableError(f"dataset={params['name']}: dataset.path={params['path']}: {bad}")
    tables = []
    for f in files:
        try:
            tables.append(pq.read_table(f))
        except (OSError, pa.ArrowException) as e:  # a footer that reads, pages that do not
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataUnavailableError(
                f"dataset={params['name']}: dataset.path={params['path']}: {_shown(Path(f), Path(root))} cannot be "
                f"read ({first})"
            ) from None
    try:
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as e:
        raise DataUnavailableError(
            f"dataset={params['name']}: {_where(params)}: the train files do not share one schema ({e})"
        ) from None
    if table.num_rows == 0:
        raise DataUnavailableError(f"dataset={params['name']}: {_where(params)} has no rows in its {SPLIT} split")
    features = datasets.Features.from_arrow_schema(table.schema)
    return datasets.Dataset(datasets.table.InMemoryTable(table), info=datasets.DatasetInfo(features=features))


def _unavailable(params: Mapping[str, Any], e: Exception, unreachable: str | None = None) -> DataUnavailableError:
    if unreachable:
        return DataUnavailableError(
            f"dataset={params['name']}: the Hugging Face hub ({hub_reach.endpoint()}) cannot be reached "
            f"({unreachable}) and {source_of(params)!r} is not in the local cache; " + how_to_get(params)
        )
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return DataUnavailableError(
        f"dataset={params['name']}: cannot load {source_of(params)!r} ({type(e).__name__}: {first[:200]}); "
        + how_to_get(params)
    )


def _parquet_rows(params: Mapping[str, Any]) -> int | None:
    """Rows in a local path's train parquet files (from their footers), or ``None`` if it has none or one is bad."""
    import pyarrow.parquet as pq

    root = Path(params["path"])
    files = sorted(root.glob(f"{SPLIT}-*.parquet")) + sorted(root.glob(f"{SPLIT}/*.parquet"))
    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files) if files else None
    except Exception:  # noqa: BLE001 - not parquet after all: the caller's own message stands
        return None


def _unreadable_parquet(params: Mapping[str, Any], files: list[str] | None = None) -> str | None:
    """``<file> (<size> bytes): not a parquet file (<why>)`` for the first of ``files`` (default: the train parquet
    files under a local path) that pyarrow cannot open (a 0-byte or cut-off file), else ``None``."""
    import pyarrow.parquet as pq

    root = Path(params["path"]).expanduser()
    found = sorted(root.glob(f"{SPLIT}-*.parquet")) + sorted(root.glob(f"{SPLIT}/*.parquet"))
    for f in [Path(f) for f in files] if files is not None else found:
        try:
            pq.ParquetFile(f).metadata  # noqa: B018 - reading the footer is the check
        except Exception as e:  # noqa: BLE001 - pyarrow's errors for a damaged file vary
            return f"{_shown(f, root)} ({f.stat().st_size} bytes): not a parquet file ({str(e).splitlines()[0]})"
    return None


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it lies under it (messages name files as the user laid them out)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def _where(params: Mapping[str, Any]) -> str:
    """The files of the train split for messages: ``dataset.path=<dir> (<file>, …)``, or the hub id."""
    if not params.get("path"):
        return f"{SOURCES[params['name']].hub_id} ({SPLIT} split)"
    root = Path(params["path"]).resolve()
    files = [Path(f).relative_to(root).as_posix() for f in _listing(params["path"])]
    train = [f for f in files if f.startswith(f"{SPLIT}-") or f.startswith(f"{SPLIT}/")] or files
    shown = ", ".join(train[:2]) + (f", … ({len(train)} files)" if len(train) > 2 else "")
    return f"dataset.path={params['path']} ({shown})"


def _label_key(params: Mapping[str, Any]) -> str:
    return str(params.get("label_key") or SOURCES[params["name"]].label_key)


def _is_encoded_image(feature: Any) -> bool:
    """An image feature: ``datasets.Image``, or the ``{bytes, path}`` struct a parquet file without the
    ``huggingface`` schema metadata shows for the same column."""
    import datasets

    return isinstance(feature, datasets.Image) or (isinstance(feature, dict) and set(feature) == {"bytes", "path"})


def image_column(params: Mapping[str, Any], columns: list[str], features: Mapping[str, Any] | None = None) -> str:
    """The image column: the configured ``image_key``, else the data set's usual one, else ``image``/``img``, else
    the one column of encoded images (``features``: the split's, for a parquet file without metadata)."""
    candidates = [params.get("image_key"), SOURCES[params["name"]].image_key, "image", "img"]
    for key in candidates:
        if key and key in columns:
            return str(key)
    encoded = [c for c in columns if features is not None and _is_encoded_image(features[c])]
    if len(encoded) == 1:
        return encoded[0]
    raise DataUnavailableError(
        f"dataset={params['name']}: no image column in {source_of(params)!r}; its columns are {columns} "
        f"(set dataset.image_key)"
    )


def _chw(shape: tuple[int, ...], channels: int) -> list[int]:
    """An image array's shape as ``[C, H, W]`` (``[H, W]`` is one channel; ``[H, W, C]`` is channels-last)."""
    if len(shape) == 2:
        return [1, *shape]
    if len(shape) == 3 and shape[-1] == channels and shape[0] != channels:
        return [shape[2], shape[0], shape[1]]
    return list(shape)


def decode_images(split: Any, image_key: str, input_shape: list[int]) -> np.ndarray:
    """Every image of ``split`` as one array ``[N, C, H, W]``: ``uint8`` for encoded images, else as stored.

    Encoded images (the ``datasets.Image`` feature: PNG/JPEG bytes or file paths) are read straight from the Arrow
    column, without ``datasets``' per-row formatting, and decoded once each with the feature's own
    ``decode_example``, then converted to grey (C = 1) or RGB (C = 3) like the hub loaders do. Array columns are
    read in one bulk conversion. Cost: one image decode per row (MNIST's 60,000 PNGs: a few seconds).
    """
    global decoded_images
    import datasets

    channels, shape = int(input_shape[0]), [int(s) for s in input_shape]
    feature = split.features[image_key]
    if _is_encoded_image(feature):
        feature = feature if isinstance(feature, datasets.Image) else datasets.Image()
        mode = "L" if channels == 1 else "RGB"
        raw = split.data.column(image_key).to_pylist()
        out = np.empty((len(raw), *shape[1:], *([channels] if channels > 1 else [])), dtype=np.uint8)
        for i, value in enumerate(raw):
            try:
                array = np.asarray(feature.decode_example(value).convert(mode))
            except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad image
                first = (str(e).strip().splitlines() or [""])[0][:120]
                raise DataUnavailableError(
                    f"column {image_key!r}, row {i}: the image cannot be decoded ({type(e).__name__}: {first})"
                ) from None
            if array.shape != out.shape[1:]:
                raise DataUnavailableError(
                    f"column {image_key!r}, row {i}: image of shape {_chw(array.shape, channels)}, "
                    f"dataset.input_shape is {shape}"
                )
            out[i] = array
            decoded_images += 1
    else:
        try:
            out = np.asarray(split.with_format("numpy")[image_key])
        except ValueError:  # rows of different shapes (numpy: "inhomogeneous shape"): name the first odd one
            rows = split.data.column(image_key).to_pylist()
            common = np.asarray(rows[0]).shape
            i, odd = next((i, np.asarray(r).shape) for i, r in enumerate(rows) if np.asarray(r).shape != common)
            raise DataUnavailableError(
                f"column {image_key!r}, row {i}: image of shape {list(odd)}, row 0's is {list(common)} "
                f"(dataset.input_shape is {shape})"
            ) from None
        if out.dtype == object:  # ragged in a way numpy kept as objects
            raise DataUnavailableError(
                f"column {image_key!r}: images of different shapes (dataset.input_shape is {shape})"
            )
        if out.dtype != np.uint8:
            out = out.astype(np.float32)
    if out.ndim == 3:
        out = out[:, None]
    elif out.ndim == 4 and out.shape[-1] == channels and out.shape[1] != channels:
        out = out.transpose(0, 3, 1, 2)
    if list(out.shape[1:]) != shape:
        raise DataUnavailableError(f"images have shape {list(out.shape[1:])}, dataset.input_shape is {shape}")
    return np.ascontiguousarray(out)


@functools.lru_cache(maxsize=4)
def _split_key(source_json: str) -> dict[str, Any]:
    """What identifies the decoded split: the loaded data's fingerprint, the columns, the input shape, the decoder.

    Computing it loads the split through ``datasets`` (an import of about 2 s and 150 MB per process); the driver
    does so before every run (:func:`refresh_split_key`) and records the key in the cache's index with the files it
    came from. Later processes (Ray actors, SuperNodes) whose files still match take it from there and never import
    ``datasets`` at all.
    """
    known = _read_index(_index_path(source_json))
    if known is not None and _still_the_same_files(json.loads(source_json), known):
        return known["key"]
    return _compute_split_key(source_json)


def refresh_split_key(params: Mapping[str, Any]) -> None:
    """Look at the data through ``datasets`` again and record its key (the driver's data check does this before every
    run, so data downloaded or changed since is noticed even where the index would still match)."""
    forget_loaded()  # nothing of an older look survives
    _compute_split_key(_source_json(params))


def forget_loaded() -> None:
    """Drop this process's loaded splits, keys, decoded arrays and partitions (what a new process starts without)."""
    for cached in (_load_split, _split_key, _decoded, _partition):
        if hasattr(cached, "cache_clear"):  # (a test may have replaced one with a plain function)
            cached.cache_clear()


def _index_path(source_json: str) -> Path:
    return (
        array_cache.cache_root() / "index" / f"{json.loads(source_json)['name']}-{array_cache.digest(source_json)}.json"
    )


def _compute_split_key(source_json: str) -> dict[str, Any]:
    """The split's key, looked at afresh. A local ``path`` is keyed by its files' contents
    (:func:`perfedavg.data.integrity.files_digest`, streamed: MNIST's 16 MB of parquet files in about 0.015 s,
    CIFAR-10's 136 MB in about 0.34 s), not by modification times; if the index already holds that digest, the key
    recorded with it is used without loading the split. A hub data set is keyed by ``datasets``' fingerprint of its
    download."""
    params = json.loads(source_json)
    contents = None
    if params.get("path"):
        files = _listing(params["path"])
        contents = integrity.files_digest(params["path"], files)
        known = _read_index(_index_path(source_json))
        if known is not None and known.get("key", {}).get("contents") == contents and known.get("files") == files:
            known["signature"] = _files_signature(files)
            array_cache.write_json(_index_path(source_json), array_cache.sealed(known))
            return known["key"]
    split = _load_split(source_json, contents)
    image_key = image_column(params, split.column_names, split.features)
    label_key = _label_key(params)
    _check_label_column(params, split, label_key)
    # Not the path or cache directory: the same data reached as ../data and /abs/data shares one entry.
    shape = list(params["input_shape"])
    key: dict[str, Any] = (
        {"contents": contents}
        if contents
        else {
            "fingerprint": getattr(split, "_fingerprint", None)
            or json.dumps([f["filename"] for f in split.cache_files])
        }
    )
    key.update({"split": SPLIT, "image": image_key, "label": label_key, "input_shape": shape})
    key["decoder"] = _versions("pillow", "datasets")  # a new decoder decodes again (once)
    files = _source_files(params, split)
    index = {"key": key, "files": files, "signature": _files_signature(files)}
    array_cache.write_json(_index_path(source_json), array_cache.sealed(index))
    return key


def _check_label_column(params: Mapping[str, Any], split: Any, label_key: str) -> None:
    """The label column exists and holds integers (a ``ClassLabel`` or an integer ``Value``)."""
    if label_key not in split.column_names:
        raise DataUnavailableError(
            f"{_where(params)}: no label column {label_key!r}; its columns are {split.column_names} "
            f"(set dataset.label_key)"
        )
    column = split.data.column(label_key)
    import pyarrow as pa

    if not pa.types.is_integer(column.type):
        first = column[0].as_py() if len(column) else None
        raise DataUnavailableError(
            f"{_where(params)}: column {label_key!r}, row 0: {first!r} ({column.type}); labels must be integers in "
            f"[0, num_classes)"
        )
    if column.null_count:
        import pyarrow.compute as pc

        row = pc.index(pc.is_null(column), True).as_py()
        raise DataUnavailableError(
            f"{_where(params)}: column {label_key!r}, row {row}: no value (null; {column.null_count} such rows); "
            f"labels must be integers in [0, num_classes)"
        )


def data_fingerprint(params: Mapping[str, Any]) -> str:
    """What identifies the data a run reads: the digest of a local ``path``'s files, else ``datasets``' fingerprint
    of the hub download (as recorded by the driver's look at the data, :func:`refresh_split_key`)."""
    key = _split_key(_source_json(params))
    return str(key.get("contents") or key.get("fingerprint"))


def validate_split(params: Mapping[str, Any]) -> None:
    """Labels in ``[0, num_classes)`` and finite pixels (float images) in the whole decoded split; else one line
    naming the files, the column, the first bad row and its value. Cost: one pass over the labels (and over float
    images; decoded ``uint8`` images are finite by construction)."""
    images, labels = decoded_split(params)
    key = _split_key(_source_json(params))
    classes = int(params.get("num_classes") or np.iinfo(np.int64).max)  # every dataset config names it
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        row = int(bad[0])
        raise DataUnavailableError(
            f"{_where(params)}: column {key['label']!r}, row {row}: {int(labels[row])}; labels must be integers in "
            f"[0, {classes}) (dataset.num_classes={classes}); {bad.size} row(s) outside"
        )
    if images.dtype != np.uint8:
        finite = np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            value = images[row].reshape(-1)[~np.isfinite(images[row].reshape(-1))][0]
            raise DataUnavailableError(
                f"{_where(params)}: column {key['image']!r}, row {row}: a pixel is {float(value)}; images must be "
                "finite"
            )


def _still_the_same_files(params: Mapping[str, Any], known: Mapping[str, Any]) -> bool:
    """The recorded files are all there, unchanged, and (for a local ``path``) no file was added or removed."""
    if params.get("path") and _listing(params["path"]) != known["files"]:
        return False
    return _files_signature(known["files"]) == known["signature"]


def _listing(path: str) -> list[str]:
    root = Path(path).resolve()
    return sorted(str(p) for p in root.rglob("*") if p.is_file())


def _source_files(params: Mapping[str, Any], split: Any) -> list[str]:
    """The files a split was read from: everything under a local ``path``, else the split's cache files."""
    if params.get("path"):
        return _listing(params["path"])
    return sorted(str(Path(f["filename"]).resolve()) for f in split.cache_files)


def _files_signature(files: list[str]) -> list[list[int] | None]:
    """``[size, mtime_ns]`` of each file (``None`` if it is gone): what changes when the data changes."""
    out: list[list[int] | None] = []
    for name in files:
        try:
            st = os.stat(name)
            out.append([st.st_size, st.st_mtime_ns])
        except OSError:
            out.append(None)
    return out


def _versions(*distributions: str) -> dict[str, str]:
    """Installed versions of ``distributions`` (without importing them)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in distributions:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.lru_cache(maxsize=1)
def _partition_code_digest() -> str:
    """A digest of this package's partitioning code, so a changed partitioner never reuses stored partitions."""
    here = Path(__file__).resolve().parent
    code = sorted([*here.glob("*partition*.py"), here / "columns.py"])  # partition.py, *_partitioner.py, their reader
    text = "".join(path.read_text() for path in code)
    return array_cache.digest(text)


def _read_index(path: Path) -> dict[str, Any] | None:
    """The recorded key of a split and the files it came from, or ``None`` (then it is computed again and the index
    rewritten) where there is none or it is damaged: not sealed, not matching its seal, or short of a field."""
    try:
        record = array_cache.unseal(path.read_text())
        if not isinstance(record.get("key"), dict) or not isinstance(record.get("files"), list):
            raise ValueError("short of a field")
        for field in ("image", "label"):
            if field not in record["key"]:
                raise ValueError(f"its key has no {field!r}")
        return record
    except (FileNotFoundError, array_cache.Unsealed):  # none yet, or one written before indexes were sealed
        return None
    except (OSError, ValueError) as e:
        log.warning("data cache index %s is damaged (%s); computed again", path, e)
        return None


@functools.lru_cache(maxsize=4)
def _decoded(source_json: str) -> tuple[np.ndarray, np.ndarray]:
    params = json.loads(source_json)
    key = _split_key(source_json)
    image_key, label_key = key["image"], key["label"]

    def build() -> dict[str, np.ndarray]:
        split = _load_split(source_json, key.get("contents"))
        start = time.perf_counter()
        log.info(  # names the files read: every train-*.parquet under a local path is part of the split
            "decoding the %d images of dataset=%s from %s once (memory-mapped cache: %s)",
            len(split),
            params["name"],
            _where(params),
            array_cache.cache_root(),
        )
        images = decode_images(split, image_key, list(params["input_shape"]))
        labels = np.asarray(split.data.column(label_key).to_numpy(zero_copy_only=False), dtype=np.int64)
        log.info("decoded %d images in %.1f s", len(images), time.perf_counter() - start)
        return {"images": images, "labels": labels}

    try:
        arrays = array_cache.load_or_build(f"{params['name']}-{SPLIT}", key, build)
    except DataUnavailableError as e:
        where = "" if str(e).startswith(("dataset", _where(params))) else f"{_where(params)}: "
        raise DataUnavailableError(f"dataset={params['name']}: {where}{e}") from None
    return arrays["images"], arrays["labels"]


def decoded_split(params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, C, H, W] uint8 or float32, labels [N] int64)`` of the whole train split, memory-mapped.

    Decoded at most once per machine (and cache directory); later calls in this process return the same arrays.
    """
    return _decoded(_source_json(params))


@functools.lru_cache(maxsize=8)
def _partition(params_json: str, num_clients: int, seed: int) -> list[np.ndarray]:
    params = json.loads(params_json)
    key = {**_split_key(_source_json(params)), "partition": params["partition"], "clients": num_clients, "seed": seed}
    # The partitioners' code: Flower's (and the shuffle of datasets) by version, ours by content.
    key["partitioner"] = {**_versions("flwr-datasets", "datasets"), "perfedavg": _partition_code_digest()}

    def build() -> dict[str, np.ndarray]:
        _, labels = decoded_split(params)
        parts = partition_indices(labels, params["partition"], num_clients, seed, sort=False)
        return {"rows": np.concatenate(parts), "offsets": np.cumsum([0, *map(len, parts)])}

    stored = array_cache.load_or_build(f"{params['name']}-partition", key, build)
    rows, offsets = stored["rows"], stored["offsets"]
    return [np.asarray(rows[offsets[i] : offsets[i + 1]]) for i in range(num_clients)]


def hub_partition(params: Mapping[str, Any], num_clients: int, seed: int) -> list[np.ndarray]:
    """Row indices of each client's examples in the train split, in ``FederatedDataset.load_partition`` order.

    Computed once per machine (Flower's partitioners read labels row by row: seconds for MNIST) and stored beside
    the decoded split; later processes read them from there."""
    return _partition(json.dumps(dict(params), sort_keys=True), num_clients, seed)


def partition_sizes(params: Mapping[str, Any], num_clients: int, seed: int) -> list[int]:
    """Examples held by each client (before its train/test split). Decodes the split if no process has yet."""
    return [len(rows) for rows in hub_partition(params, num_clients, seed)]


def scaled(images: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1]: ``uint8`` divided by 255, anything else as float32."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return images.astype(np.float32) / scale


def make_hub_client(params: Mapping[str, Any], client_id: int, num_clients: int, seed: int) -> ClientData:
    """Client ``client_id``'s partition as tensors, with its own seeded train/test split. No decoding: a slice of
    the memory-mapped split (cost: copying and scaling the client's own images)."""
    images, labels = decoded_split(params)
    rows = hub_partition(params, num_clients, seed)[client_id]
    x, y = torch.from_numpy(scaled(images[rows])), torch.from_numpy(labels[rows])
    return split_train_test(client_id, x, y, float(params["test_fraction"]), split_generator(seed, client_id))
