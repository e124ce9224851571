"""Per-round checkpoints of a federation (the config comparison that guards resuming: :mod:`perfedavg.config.resume`).

After every completed round the server writes ``<run dir>/checkpoints/last.pt`` atomically (a temporary file in the
same directory, flushed to disk, then ``os.replace``): the global weights, the round number, the state of the
server's training-sample RNG (the evaluation sample is a function of seed and round), the metrics so far and the
resolved config. Clients need no state:
their randomness is a function of (seed, client id, round). Resuming from it therefore continues exactly where an
uninterrupted run would have been.

The checkpoint before it is kept as ``previous.pt`` (hard-linked before the replace, so ``last.pt`` always exists): a
latest checkpoint that cannot be read (truncated, garbage) or whose contents no longer match the digest written with
them (bytes damaged in place that still unpickle) falls back to it with a warning. The digest (a SHA-256 of the
serialised state, stored beside it in the file) costs an in-memory copy and a hash: about 1 ms per MB.
The checkpoint also records the run's data (``data``: the contents digest of a local data set, see
:func:`perfedavg.data.data_fingerprint`), so a resume on other data is refused. Checkpoints hold tensors
and plain data only and are read with ``torch.load(weights_only=True)``: resuming a directory never runs pickled code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
PREVIOUS_FILE = "previous.pt"
FORMAT_VERSION = 2  # 2: the state's bytes with their SHA-256 (:func:`_sealed`); format 1 (no digest) is still read
READABLE_VERSIONS = (1, 2)
#: What every checkpoint holds besides its version.
REQUIRED_KEYS = ("round", "weights", "sample_rng", "rounds", "client_failures", "config")

log = logging.getLogger("perfedavg")

#: Checkpoints whose fallback was already reported (a resume reads the checkpoint in several checks: say it once).
_FELL_BACK: set[Path] = set()


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be used (unreadable, not ours, or of another format)."""


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def save(run_dir: Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically: a reader (or a resumed run) sees the previous or the new checkpoint, never half.
    The checkpoint it replaces becomes ``previous.pt``."""
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(_sealed(state), f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # e.g. the disk is full: leave no partial file; the last good checkpoint is untouched
        tmp.unlink(missing_ok=True)
        raise
    if path.exists():
        previous, previous_tmp = path.with_name(PREVIOUS_FILE), path.with_name("previous.tmp")
        previous_tmp.unlink(missing_ok=True)
        try:
            os.link(path, previous_tmp)  # no copy; last.pt stays in place until the replace below
        except OSError:  # a file system without hard links
            shutil.copyfile(path, previous_tmp)
        os.replace(previous_tmp, previous)
    os.replace(tmp, path)
    return path


def _sealed(state: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` serialised, with the SHA-256 of those bytes beside them: ``{"version", "payload", "digest"}``. The
    digest covers every byte that is later unpickled (weights, RNG states, the metrics history), at the cost of one
    in-memory copy and a hash at C speed (about 1 ms per MB)."""
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    payload = buffer.getvalue()
    return {"version": FORMAT_VERSION, "payload": payload, "digest": hashlib.sha256(payload).hexdigest()}


def _unsealed(path: Path, sealed: dict[str, Any]) -> dict[str, Any]:
    payload = sealed.get("payload")
    if not isinstance(payload, bytes) or hashlib.sha256(payload).hexdigest() != sealed.get("digest"):
        raise CheckpointError(f"{path}: its contents do not match the digest written with them (damaged)")
    return {"version": FORMAT_VERSION, **torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)}


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and state.get("version") == FORMAT_VERSION:
            state = _unsealed(path, state)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, garbage, or holding objects weights_only refuses
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or state.get("version") not in READABLE_VERSIONS:
        version = state.get("version") if isinstance(state, dict) else None
        raise CheckpointError(f"{path}: not a perfedavg checkpoint of format {FORMAT_VERSION} (format {version})")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    return state


def load(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of ``run_dir``, or ``None`` if it has none. If ``last.pt`` cannot be read, the previous
    checkpoint, with a warning; if neither can, :class:`CheckpointError` naming both."""
    path = checkpoint_path(run_dir)
    previous = path.with_name(PREVIOUS_FILE)
    if not path.exists() and not previous.exists():
        return None
    try:
        if not path.exists():
            raise CheckpointError(f"{path} is missing")
        return _read(path)
    except CheckpointError as latest:
        if not previous.exists():
            raise
        try:
            state = _read(previous)
        except CheckpointError as earlier:
            raise CheckpointError(f"{latest}; the previous checkpoint too: {earlier}") from None
        if path not in _FELL_BACK:
            _FELL_BACK.add(path)
            log.warning("%s; using the previous checkpoint (round %d) instead", latest, state["round"])
        return state
