"""Per-round checkpoints of a federation, and the config comparison that guards resuming.

After every completed round the server writes ``<run dir>/checkpoints/last.pt`` atomically (a temporary file in the
same directory, flushed to disk, then ``os.replace``): the global weights, the round number, the state of both
server RNGs (training and evaluation sampling), the metrics so far and the resolved config. Clients need no state:
their randomness is a function of (seed, client id, round). Resuming from it therefore continues exactly where an
uninterrupted run would have been.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from perfedavg.task import compute_device

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.pt"
FORMAT_VERSION = 1

#: Keys that may differ between a run and its resumption: they do not change any result.
#: (``num_rounds`` may be raised to extend a finished run; ``step_sizes`` acts only through ``alpha`` and ``beta``,
#: which are compared; ``diagnostics`` only adds curves, tests/test_diagnostics.py.)
RESUMABLE_DIFFERENCES = frozenset(
    {"resume", "verbose", "client_cpus", "client_gpus", "num_rounds", "backend", "step_sizes", "diagnostics"}
)


def checkpoint_path(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def save(run_dir: Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` atomically: a reader (or a resumed run) sees the previous or the new checkpoint, never half."""
    path = checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save({"version": FORMAT_VERSION, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint of ``run_dir``, or ``None`` if it has none."""
    path = checkpoint_path(run_dir)
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {state.get('version')} is not {FORMAT_VERSION}")
    return state


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def result_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: saved → current`` for every key that differs and would change results."""
    a, b = _flatten(saved), _flatten(current)
    # Where clients compute changes results; compare the devices meant here (checkpoints older than the
    # ``device`` key ran on the CPU).
    a["device"], b["device"] = (str(compute_device({"device": c.get("device", "cpu")})) for c in (a, b))
    lines = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in RESUMABLE_DIFFERENCES:
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            lines.append(f"{key}: {a.get(key, '<missing>')} → {b.get(key, '<missing>')}")
    return lines
