"""Digests that prove what a file, a set of files or a checkpoint's contents are (pure Python; no torch import).

* :func:`file_digest`: SHA-256 of a file's bytes, streamed (hashlib's ``file_digest``; about 0.6-0.8 GB/s on the
  project's 2-core machine: MNIST's 14 MB train parquet in 0.02 s, CIFAR-10's 113 MB in 0.2 s).
* :func:`files_digest`: one digest of a directory's files, their names (relative to the directory), sizes and
  contents: the key of a local data set, so a replaced file is noticed whatever its modification time.
* :func:`content_digest`: a digest of a nested value (mappings, sequences, tensors, arrays, scalars) as it was
  *loaded*, so a damaged checkpoint whose bytes still unpickle is told apart from the one that was written.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

#: Read size for streamed digests.
CHUNK = 1 << 20


def file_digest(path: Path | str) -> str:
    """The SHA-256 of the file's bytes (hex). Cost: one sequential read of the file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def files_digest(root: Path | str, files: Iterable[Path | str]) -> str:
    """One SHA-256 over ``files`` (sorted by their path relative to ``root``): each file's relative name, size and
    :func:`file_digest`. The same data copied elsewhere has the same digest; any byte changed, a file added, removed
    or renamed changes it."""
    root = Path(root).resolve()
    h = hashlib.sha256()
    for path in sorted(Path(f).resolve() for f in files):
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
        h.update(f"{name}\0{path.stat().st_size}\0{file_digest(path)}\n".encode())
    return h.hexdigest()


def content_digest(value: Any) -> str:
    """A SHA-256 of ``value``: mappings (by sorted key), lists and tuples, torch tensors and numpy arrays (dtype, shape
    and bytes), and scalars (bool, int, float with NaN, str, bytes, None). Equal values give equal digests; a changed
    element, key or type changes it. Cost: one pass over the data (a checkpoint's weights: milliseconds)."""
    h = hashlib.sha256()
    _feed(h, value)
    return h.hexdigest()


def _feed(h: Any, value: Any) -> None:  # noqa: C901, PLR0912 - one branch per type
    if isinstance(value, Mapping):
        h.update(b"{")
        for key in sorted(value, key=repr):
            _feed(h, key)
            _feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, list | tuple):
        h.update(b"[" if isinstance(value, list) else b"(")
        for item in value:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        h.update(f"a{array.dtype.str}{array.shape}".encode())
        h.update(memoryview(array).cast("B") if array.size else b"")
    elif hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch here
        tensor = value.detach().cpu().contiguous()
        h.update(f"t{tensor.dtype}{tuple(tensor.shape)}".encode())
        if tensor.numel():
            h.update(tensor.view(-1).view(__import__("torch").uint8).numpy().tobytes())
    elif isinstance(value, bool) or value is None:
        h.update(repr(value).encode())
    elif isinstance(value, int):
        h.update(f"i{value};".encode())
    elif isinstance(value, float):
        h.update(b"f" + (b"nan" if math.isnan(value) else struct.pack("<d", value)))
    elif isinstance(value, str):
        h.update(f"s{len(value)}:".encode() + value.encode())
    elif isinstance(value, bytes):
        h.update(f"b{len(value)}:".encode() + value)
    else:
        h.update(f"?{type(value).__name__}:{value!r}".encode())
