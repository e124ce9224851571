"""Naturally partitioned text: one client per speaker (Shakespeare by speaking role, LEAF's benchmark) or per value
of a user's own client column; next-character prediction over windows of ``input_shape[0]`` characters.

A data set is a parquet file (or a directory of ``*.parquet`` files, read in name order) with one row per client:
``dataset.client_columns`` name it (Shakespeare: ``[play, role]``) and ``dataset.text_column`` holds its text
(``text``). Characters map to LEAF's fixed vocabulary of 80 (:data:`VOCABULARY`) plus one unknown symbol (id 80),
so ``num_classes`` is 81 whatever the text.

**Clients.** The rows with at least ``dataset.min_chars`` characters are eligible; client ``i`` of a run is eligible
row ``perm[i]`` for a permutation drawn from the seed (a run of fewer clients than rows takes a seeded sample, not the
first plays in file order). More clients than eligible rows is refused, naming how many there are.

**Samples and splits, by position.** A client's text is cut once: the first ``1 − test_fraction`` of its characters
train, the rest test; with ``val_fraction`` > 0 the last share of the training part is validation. Within each part a
sample is a window of L = ``input_shape[0]`` characters and the character after it: no window crosses a boundary, so
no test (or validation) target or context is ever seen in training. A part needs at least one window (L + 1
characters): ``min_chars`` (default 450 with L = 80 and a 20 % test part: 861 of Shakespeare's 1,419 roles, at least
10 test windows each) must allow it, which is checked. The windows are strided views of one int64 vector per client
(``Tensor.unfold``): a client costs 8 bytes per character, not 8·L.

**Decoded once per machine**, like the image sets: the encoded characters of every row, their offsets and the client
names are stored in the checksummed array cache (:mod:`perfedavg.data.array_cache`), keyed by the files' contents
digest and the columns read; a row whose client or text is missing (null), a text column that is not text, a missing
column or a client named twice is refused naming the file, the row and the column.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perfedavg.data import array_cache, integrity
from perfedavg.data.types import ClientData
from perfedavg.errors import UserError

#: LEAF's Shakespeare characters (``utils/language_utils.py``: ALL_LETTERS), in its order; id = index.
VOCABULARY = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
#: The id of every character outside :data:`VOCABULARY`.
UNKNOWN = len(VOCABULARY)
#: The classes of next-character prediction: the vocabulary and the unknown symbol.
NUM_CLASSES = UNKNOWN + 1
#: Bump when the stored layout changes (old cache entries are then rebuilt).
CACHE_VERSION = 1

_IDS = {c: i for i, c in enumerate(VOCABULARY)}


class TextDataError(UserError, ValueError):
    """The text data cannot serve the run: the message names the file, row, column or key and what is allowed."""


def encode(text: str) -> np.ndarray:
    """The character ids of ``text`` ``[len(text)]`` (uint8; :data:`UNKNOWN` outside the vocabulary)."""
    return np.fromiter((_IDS.get(c, UNKNOWN) for c in text), dtype=np.uint8, count=len(text))


def files_of(path: str | Path) -> list[Path]:
    """The parquet files of ``dataset.path``: the file itself, or a directory's ``*.parquet`` in name order."""
    root = Path(path).expanduser()
    if root.is_file():
        return [root]
    if root.is_dir():
        found = sorted(root.glob("*.parquet"))
        if found:
            return found
        raise TextDataError(f"dataset.path={path}: holds no *.parquet file (one row per client, with a text column)")
    raise TextDataError(f"dataset.path={path}: no such file or directory (a parquet file or a folder of them)")


@dataclass(frozen=True)
class Corpus:
    """Every row's encoded text, end to end, with the offsets where each row starts ``[rows + 1]`` and its client
    name (the client columns joined by ``/``)."""

    ids: np.ndarray  # [total characters] uint8
    offsets: np.ndarray  # [rows + 1] int64
    names: np.ndarray  # [rows] str

    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def _columns(params: Mapping[str, Any]) -> tuple[list[str], str]:
    clients = list(params.get("client_columns") or [])
    text = params.get("text_column")
    if not clients or not text:
        raise TextDataError(
            f"dataset={params['name']}: needs dataset.client_columns (the columns naming a row's client, e.g. "
            f"[play, role]) and dataset.text_column (its text); got {clients or None} and {text or None}"
        )
    return clients, str(text)


def _read_rows(files: Sequence[Path], client_columns: list[str], text_column: str) -> tuple[list[str], list[str]]:
    """Client names and texts of every row of ``files``, checked (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names: list[str] = []
    texts: list[str] = []
    seen: dict[str, str] = {}
    for file in files:
        try:
            table = pq.read_table(file)
        except (OSError, pa.ArrowException) as e:
            raise TextDataError(f"{file}: cannot be read as parquet ({e})") from None
        missing = [c for c in (*client_columns, text_column) if c not in table.column_names]
        if missing:
            raise TextDataError(
                f"{file}: has no column {', '.join(missing)} (dataset.client_columns / dataset.text_column); its "
                f"columns: {', '.join(table.column_names)}"
            )
        if not pa.types.is_string(table.schema.field(text_column).type) and not pa.types.is_large_string(
            table.schema.field(text_column).type
        ):
            raise TextDataError(
                f"{file}: column {text_column} (dataset.text_column) holds {table.schema.field(text_column).type}, "
                "not text"
            )
        keys = [table.column(c).to_pylist() for c in client_columns]
        for row, text in enumerate(table.column(text_column).to_pylist()):
            parts = [k[row] for k in keys]
            if text is None or any(p is None for p in parts):
                column = text_column if text is None else client_columns[[p is None for p in parts].index(True)]
                raise TextDataError(f"{file}: row {row} has no value in column {column}")
            name = "/".join(str(p) for p in parts)
            where = f"{file.name} row {row}"
            if name in seen:
                raise TextDataError(
                    f"{file}: row {row} names client {name!r} again (first at {seen[name]}); each client is one row"
                )
            seen[name] = where
            names.append(name)
            texts.append(text)
    return names, texts


def corpus(params: Mapping[str, Any]) -> Corpus:
    """The encoded rows of ``dataset.path`` (decoded once per machine, then memory-mapped from the cache)."""
    if not params.get("path"):
        raise TextDataError(f"dataset={params['name']}: needs dataset.path (a parquet file or a folder of them)")
    files = files_of(params["path"])
    client_columns, text_column = _columns(params)
    key = {
        "version": CACHE_VERSION,
        "files": integrity.files_digest(Path(params["path"]).expanduser(), files),
        "client_columns": client_columns,
        "text_column": text_column,
        "vocabulary": VOCABULARY,
    }
    return _corpus(array_cache.digest(str(sorted(key.items()))), tuple(files), tuple(client_columns), text_column)


@functools.lru_cache(maxsize=4)
def _corpus(digest: str, files: tuple[Path, ...], client_columns: tuple[str, ...], text_column: str) -> Corpus:
    def build() -> dict[str, np.ndarray]:
        names, texts = _read_rows(files, list(client_columns), text_column)
        encoded = [encode(t) for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(e) for e in encoded])
        ids = np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.uint8)
        return {"ids": ids, "offsets": offsets, "names": np.array(names, dtype=str)}

    arrays = array_cache.load_or_build("text", {"digest": digest}, build)
    return Corpus(arrays["ids"], arrays["offsets"], arrays["names"])


def window_length(params: Mapping[str, Any]) -> int:
    shape = list(params["input_shape"])
    if len(shape) != 1 or int(shape[0]) < 1:
        raise TextDataError(f"dataset.input_shape={shape}: a text data set takes [L], the window length (e.g. [80])")
    return int(shape[0])


def part_lengths(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """Characters of a client's (train, validation, test) parts for a text of ``n`` characters."""
    test = int(round(n * test_fraction))
    rest = n - test
    val = int(round(rest * val_fraction))
    return rest - val, val, test


def least_chars(length: int, test_fraction: float, val_fraction: float) -> int:
    """The fewest characters for which every part a run uses holds at least one window of ``length``."""
    n = length + 1
    while any(
        0 < need and part < length + 1
        for part, need in zip(part_lengths(n, test_fraction, val_fraction), (1, val_fraction, test_fraction))
    ):
        n += 1
    return n


def eligible(params: Mapping[str, Any], data: Corpus) -> np.ndarray:
    """The rows with at least ``dataset.min_chars`` characters, in file order; refused where ``min_chars`` is too
    small for a window in every part."""
    length, test, val = window_length(params), float(params["test_fraction"]), float(params.get("val_fraction", 0))
    least = least_chars(length, test, val)
    min_chars = int(params["min_chars"])
    if min_chars < least:
        raise TextDataError(
            f"dataset.min_chars={min_chars}: with windows of {length} characters, test_fraction={test:g} and "
            f"val_fraction={val:g} a client needs at least {least} characters for one window in each part; use "
            f"dataset.min_chars ≥ {least}"
        )
    return np.flatnonzero(data.sizes() >= min_chars)


def client_rows(params: Mapping[str, Any], num_clients: int, seed: int, data: Corpus) -> np.ndarray:
    """The row of each of the run's ``num_clients`` clients (see the module docstring); refused if there are fewer
    eligible rows."""
    rows = eligible(params, data)
    if num_clients > len(rows):
        raise TextDataError(
            f"num_clients={num_clients}: dataset={params['name']} has {len(rows)} clients with at least "
            f"dataset.min_chars={params['min_chars']} characters (of {len(data.names)}); use num_clients ≤ "
            f"{len(rows)} or a smaller dataset.min_chars"
        )
    order = np.random.default_rng([seed, 7]).permutation(len(rows))
    return rows[order[:num_clients]]


def windows(ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every window of ``length`` characters of ``ids`` ``[n]`` and the character after it: ``[n − length, length]``
    (a strided view of ``ids``, no copy) and ``[n − length]``."""
    count = max(0, int(ids.shape[0]) - length)
    return ids.unfold(0, length, 1)[:count], ids[length : length + count]


def make_text_client(params: Mapping[str, Any], client_id: int, num_clients: int, seed: int) -> ClientData:
    """Client ``client_id``'s train / test (and validation) windows, split by position (module docstring)."""
    data = corpus(params)
    row = int(client_rows(params, num_clients, seed, data)[client_id])
    ids = torch.from_numpy(data.row(row).astype(np.int64))
    length = window_length(params)
    train, val, test = part_lengths(int(ids.shape[0]), float(params["test_fraction"]), float(params["val_fraction"]))
    x_train, y_train = windows(ids[:train], length)
    x_test, y_test = windows(ids[train + val :], length)
    x_val = y_val = None
    if val:
        x_val, y_val = windows(ids[train : train + val], length)
    return ClientData(client_id, x_train, y_train, x_test, y_test, x_val, y_val)


def check_text(num_clients: int, seed: int, params: Mapping[str, Any]) -> None:
    """Everything a run of ``num_clients`` needs, before any client starts: the files and rows (decoded and cached
    here), ``num_classes`` and enough eligible clients."""
    if int(params["num_classes"]) != NUM_CLASSES:
        raise TextDataError(
            f"dataset.num_classes={params['num_classes']}: text data sets predict one of {NUM_CLASSES} characters "
            f"(LEAF's {len(VOCABULARY)} and an unknown symbol); leave it at {NUM_CLASSES}"
        )
    client_rows(params, num_clients, seed, corpus(params))


def data_fingerprint(params: Mapping[str, Any]) -> str:
    """The files' contents digest (:func:`perfedavg.data.integrity.files_digest`)."""
    files = files_of(params["path"])
    return integrity.files_digest(Path(params["path"]).expanduser(), files)
