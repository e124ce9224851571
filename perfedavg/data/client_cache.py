"""Every client's tensors kept for the life of a process, within a memory bound.

A simulated worker (a Ray actor, the in-process grid, a SuperNode) serves many clients, each sampled again and
again. :class:`ClientCache` keeps each client's :class:`~perfedavg.data.types.ClientData` after its first use, so
a client's data is built once per process. The bound is ``$PERFEDAVG_CLIENT_CACHE_GB`` (default
:data:`DEFAULT_BOUND_GB`) per process; above it the least recently used clients are dropped and rebuilt when next
sampled (for image data sets a slice of the memory-mapped decoded split and a float conversion, milliseconds;
never a second decode). For scale: MNIST's whole train split as float32 is 0.19 GB, CIFAR-10's 0.61 GB.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from perfedavg.data.types import ClientData

#: Default per-process bound on cached client tensors, in GB (10⁹ bytes).
DEFAULT_BOUND_GB = 4.0


def bound_bytes() -> int:
    """The bound in bytes: ``$PERFEDAVG_CLIENT_CACHE_GB`` if set (a non-negative number), else the default."""
    raw = os.environ.get("PERFEDAVG_CLIENT_CACHE_GB")
    try:
        gb = float(raw) if raw else DEFAULT_BOUND_GB
    except ValueError:
        raise ValueError(f"PERFEDAVG_CLIENT_CACHE_GB={raw!r}: must be a number of GB (e.g. 4)") from None
    if not gb >= 0:
        raise ValueError(f"PERFEDAVG_CLIENT_CACHE_GB={raw!r}: must be ≥ 0")
    return int(gb * 1e9)


def nbytes(data: ClientData) -> int:
    """The memory ``data``'s tensors hold: each distinct storage once (a text client's windows are strided views of
    one character vector, 8 bytes per character, not per window element)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in data.tensors()}
    return sum(storages.values())


class ClientCache:
    """A least-recently-used map ``key → ClientData`` holding at most ``max_bytes`` of tensors (the most recent
    entry is always kept, even alone above the bound). ``builds`` counts the entries built, for tests."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = bound_bytes() if max_bytes is None else max_bytes
        self._entries: OrderedDict[Hashable, ClientData] = OrderedDict()
        self._bytes = 0
        self.builds = 0
        self._lock = threading.RLock()

    def get(self, key: Hashable, build: Callable[[], ClientData]) -> ClientData:
        """The cached data for ``key``, or ``build()`` it, keep it, and drop the least recently used over the bound.
        Thread-safe (the in-process pool's threads share one cache): one lookup or build at a time."""
        with self._lock:
            return self._get(key, build)

    def _get(self, key: Hashable, build: Callable[[], ClientData]) -> ClientData:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        data = build()
        self.builds += 1
        self._entries[key] = data
        self._bytes += nbytes(data)
        while self._bytes > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= nbytes(dropped)
        return data

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
