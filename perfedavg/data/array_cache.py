"""A machine-wide cache of decoded arrays, memory-mapped by every process that reads it.

An entry is a directory ``<root>/<name>-<key>/`` holding one ``.npy`` file per array and ``key.json`` (what the
key was computed from, and each array file's size and SHA-256). It is written once, atomically (into a temporary
directory, then renamed), so processes that start together either find a complete entry or build their own and the
first rename wins. Readers open the files with ``np.load(mmap_mode="r")``: N processes share one copy through the
page cache.

**Checked before use.** Each process verifies an entry's checksums the first time it opens it (one read of the files:
MNIST's 48 MB in about 0.04 s on a 2-core AMD EPYC, scripts/results/integrity.md). An entry that fails
(a file changed, truncated or missing, ``key.json`` missing or unreadable) is reported with its path and what failed,
removed, and rebuilt: the run's results are those of a clean cache.

**Shared between users.** Entries are created readable by everyone the umask allows (directories 0755, files 0644
under the usual umask 022), so one user's decoded data serves the others; an entry another user made that cannot be
read is reported and the data is built in memory for the run. The root is ``$PERFEDAVG_CACHE_DIR``, else
``$XDG_CACHE_HOME/perfedavg``, else ``~/.cache/perfedavg``; a root that cannot be written is reported once (set
``PERFEDAVG_CACHE_DIR``) and the arrays are kept in memory. Entries are never changed in place; delete the directory
to reclaim the space (MNIST: 47 MB, CIFAR-10: 154 MB).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from perfedavg.data.integrity import file_digest

log = logging.getLogger("perfedavg")

#: Bump when the stored layout changes: old entries are then ignored (and rebuilt). 2: checksums in key.json;
#: 3: key.json sealed (:func:`sealed`).
FORMAT_VERSION = 3
#: The environment variable that moves the cache.
CACHE_DIR_VARIABLE = "PERFEDAVG_CACHE_DIR"

#: Entries this process has verified (checked once per process).
_verified: set[Path] = set()
#: Cache roots this process could not write (reported once).
_unwritable: set[Path] = set()


class DamagedEntry(Exception):
    """A cache entry whose files do not match what was written."""


def forget_verified() -> None:
    """Forget which entries were verified (a test's stand-in for a new process)."""
    _verified.clear()
    _unwritable.clear()


def cache_root() -> Path:
    """Where decoded arrays live (see the module docstring)."""
    if os.environ.get("PERFEDAVG_CACHE_DIR"):
        return Path(os.environ["PERFEDAVG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "perfedavg"


def digest(text: str) -> str:
    """A short stable name for ``text`` (16 hex digits of its SHA-256)."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_dir(name: str, key: Mapping[str, Any]) -> Path:
    """The entry directory for ``key`` (any JSON-serialisable mapping) under :func:`cache_root`."""
    return cache_root() / f"{name}-{digest(json.dumps({'format': FORMAT_VERSION, **key}, sort_keys=True, default=str))}"


#: The field a sealed JSON record (:func:`sealed`) carries its own digest in.
SEAL = "seal"


def sealed(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with a :data:`SEAL`: the SHA-256 of its canonical JSON, so that a changed byte anywhere in it (a key
    name, a value) is found when it is read back (:func:`unseal`)."""
    body = {k: v for k, v in record.items() if k != SEAL}
    return {**body, SEAL: hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()}


class Unsealed(ValueError):
    """A JSON record written before records were sealed (not damaged: just older)."""


def unseal(text: str) -> dict[str, Any]:
    """The record of a sealed JSON text; ``ValueError`` naming what is wrong if it does not parse, is not a table,
    has no seal (written before records were sealed) or does not match it."""
    record = json.loads(text)
    if not isinstance(record, dict):
        raise ValueError("not a table")
    if SEAL not in record:
        raise Unsealed("not a sealed record")
    if sealed(record)[SEAL] != record[SEAL]:
        raise ValueError("does not match its seal")
    return {k: v for k, v in record.items() if k != SEAL}


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON atomically (temporary file, then rename); silently nothing if it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o644 & ~umask)  # readable by the other users of a shared cache, as the umask allows
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _read(entry: Path) -> dict[str, np.ndarray]:
    """The arrays of ``entry``, memory-mapped, after checking them against ``key.json`` once per process."""
    manifest = entry / "key.json"
    try:
        recorded = unseal(manifest.read_text())
        names, sums = list(recorded["arrays"]), dict(recorded["checksums"])
        if not all(isinstance(n, str) and isinstance(sums.get(n), list) and len(sums[n]) == 2 for n in names):
            raise ValueError("its checksums do not name every array")
    except FileNotFoundError:
        raise DamagedEntry("key.json is missing") from None
    except PermissionError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedEntry(f"key.json cannot be read ({type(e).__name__}: {e})") from None
    if entry not in _verified:
        for n in names:
            path = entry / f"{n}.npy"
            if not path.exists():
                raise DamagedEntry(f"{path.name} is missing")
            size, digest = sums[n]
            if path.stat().st_size != size:
                raise DamagedEntry(f"{path.name} has {path.stat().st_size} bytes, {size} were written")
            if file_digest(path) != digest:
                raise DamagedEntry(f"{path.name} does not match its checksum")
        _verified.add(entry)
    try:
        return {n: np.load(entry / f"{n}.npy", mmap_mode="r") for n in names}
    except PermissionError:
        raise
    except (OSError, ValueError) as e:
        raise DamagedEntry(f"cannot be memory-mapped ({type(e).__name__}: {e})") from None


def _remove(entry: Path) -> None:
    """Take a damaged entry out of the way at once (a rename), then delete it; another process may do the same."""
    doomed = entry.with_name(f".damaged-{entry.name}-{os.getpid()}")
    try:
        os.rename(entry, doomed)
    except OSError:
        return  # gone already (another process repaired it), or not ours to move: rebuilding replaces nothing
    if doomed.is_symlink() or not doomed.is_dir():
        doomed.unlink(missing_ok=True)
    else:
        shutil.rmtree(doomed, ignore_errors=True)


def _make_temporary(parent: Path, prefix: str) -> Path:
    """A new private directory in ``parent`` (created first), opened to readers as the umask allows."""
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o755 & ~umask)
    return tmp


def _report_unwritable(root: Path, e: OSError) -> None:
    if root not in _unwritable:
        _unwritable.add(root)
        log.warning(
            "the data cache %s cannot be written (%s); this run keeps its decoded data in memory. Set %s to a "
            "writable directory to cache it",
            root,
            e.strerror or e,
            CACHE_DIR_VARIABLE,
        )


def load_or_build(
    name: str, key: Mapping[str, Any], build: Callable[[], dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """The arrays stored for ``key``, memory-mapped read-only; ``build()`` them and store them first if absent.

    A damaged entry is reported, removed and rebuilt (see the module docstring). If the cache directory cannot be
    written (read-only home, full disk), the built arrays are returned from memory and nothing is stored: slower next
    time, never wrong.
    """
    entry = entry_dir(name, key)
    if entry.is_symlink() or (os.path.lexists(entry) and not entry.is_dir()):  # e.g. a symlink loop: not ours
        log.warning("data cache entry %s is damaged (not a directory); removed and rebuilt", entry)
        _remove(entry)
    if entry.exists():
        try:
            return _read(entry)
        except DamagedEntry as e:
            log.warning("data cache entry %s is damaged (%s); removed and rebuilt", entry, e)
            _remove(entry)
        except PermissionError as e:
            log.warning(
                "data cache entry %s cannot be read (%s; made by another user?); this run builds the data in "
                "memory. Set %s to a cache of your own",
                entry,
                e.strerror or e,
                CACHE_DIR_VARIABLE,
            )
            return build()
    arrays = build()
    try:
        tmp = _make_temporary(entry.parent, f".{entry.name}-")
    except OSError as e:
        _report_unwritable(entry.parent, e)
        return arrays
    try:
        sums = {}
        for n, a in arrays.items():
            path = tmp / f"{n}.npy"
            np.save(path, np.ascontiguousarray(a))
            sums[n] = [path.stat().st_size, file_digest(path)]
        record = sealed({"arrays": list(arrays), "checksums": sums, "key": key})
        (tmp / "key.json").write_text(json.dumps(record, default=str, indent=1))
        os.rename(tmp, entry)
        _verified.add(entry)
    except OSError as e:  # cannot write, or another process stored the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (entry / "key.json").exists():
            _report_unwritable(entry.parent, e)
            return arrays
    try:
        return _read(entry)
    except (DamagedEntry, PermissionError):  # another process's entry, damaged in the moment since: use ours
        return arrays
