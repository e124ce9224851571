"""Which config differences block a resume: a run continued from its checkpoint must compute what the
uninterrupted run would have (:mod:`perfedavg.checkpoint` holds the checkpoints themselves)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perfedavg.config.schema import reads_key

#: Keys that may differ between a run and its resumption: they do not change any result.
#: (``num_rounds`` may be raised to extend a finished run; ``step_sizes`` acts only through ``alpha`` and ``beta``,
#: which are compared; ``diagnostics`` and ``stability`` only add curves,
#: tests/test_diagnostics.py and tests/test_stability.py.) ``client_cpus`` is not among
#: them: it is each client's torch thread count, and another count can change the last bits of a reduction.
RESUMABLE_DIFFERENCES = frozenset(
    {
        "resume",
        "verbose",
        "client_gpus",
        "num_rounds",
        "backend",
        "ray_address",
        "step_sizes",
        "diagnostics",
        "stability",  # the monitor only measures (its own minibatch generator) and warns; its safeguard: below
        "round_timeout_s",  # an operational limit (a resume may raise it for a slow machine)
        "data_fingerprint",  # compared on its own (preparation.check_resumable), with its own message
    }
)


#: The stability keys that change results where the safeguard is on (perfedavg.curvature.stability).
SAFEGUARD_KEYS = ("stability.safeguard", "stability.iterations")


#: Keys added after runs were checkpointed without them, with the value those runs had in effect.
KEYS_ADDED_LATER: dict[str, Any] = {"adapt_batch": None}


def _flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _unread(key: str, saved: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """True if neither run reads ``key`` (:func:`perfedavg.config.reads_key`: e.g. ``algorithm.lam`` of a
    Per-FedAvg run, which a checkpoint older than that key lacks)."""
    return not any(reads_key(cfg, key) for cfg in (saved, current))


def result_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: saved → current`` for every key that differs and would change results."""
    from perfedavg.task import compute_device  # PyTorch: only when a resume is checked

    a, b = _flatten(saved), _flatten(current)
    # Where clients compute changes results; compare the devices meant here (checkpoints older than the
    # ``device`` key ran on the CPU).
    a["device"], b["device"] = (str(compute_device({"device": c.get("device", "cpu")})) for c in (a, b))
    for flat in (a, b):  # keys newer than a checkpoint: it ran at their default
        for key, default in KEYS_ADDED_LATER.items():
            flat.setdefault(key, default)
    lines = []
    for key in sorted(set(a) | set(b)):
        if key.split(".")[0] in RESUMABLE_DIFFERENCES or _unread(key, a, b):
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            lines.append(f"{key}: {a.get(key, '<missing>')} → {b.get(key, '<missing>')}")
    # The stability safeguard changes the trajectory: where either run has it, it and its estimate must agree.
    if a.get("stability.safeguard") is not None or b.get("stability.safeguard") is not None:
        for key in SAFEGUARD_KEYS:
            if a.get(key) != b.get(key):
                lines.append(f"{key}: {a.get(key, '<missing>')} → {b.get(key, '<missing>')}")
    return lines
