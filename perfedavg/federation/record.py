"""A federation with its records: TensorBoard (scalars, histograms, the HPARAMS record of the keys the run reads)
and ``metrics.json`` in the run directory; resumed from the directory's checkpoint when the config says so."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.serverapp import Grid

from perfedavg import algorithms, atomic, checkpoint, host, task
from perfedavg.config import EXECUTION_KEYS, reads_key
from perfedavg.federation.loop import Federation
from perfedavg.federation.transport import Transport

#: Left out of the HPARAMS record: where or how a run executes, not what it computes (perfedavg.config).
NOT_HPARAMS = EXECUTION_KEYS

#: Config groups whose choice is recorded under the group's name (the chosen config's ``name``/``mode``).
_GROUP_HPARAMS = {"model": "name", "dataset": "name", "partition": "name", "algorithm": "name", "hessian": "mode"}


def hparams_of(cfg: Mapping[str, Any], overrides: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """The hyper-parameters shown in TensorBoard's HPARAMS tab, and which of them the command chose.

    ``overrides``: the run's Hydra overrides (``.hydra/overrides.yaml``; in a sweep, the job's values). Their keys come
    first and are returned as *chosen* (a sweep's swept keys among them); an overridden key outside the fixed set
    below (``model.hidden``, ``diagnostics.every``, ``experiment``) is added. Values: str, float, int or bool."""
    params: dict[str, Any] = {group: cfg[group][field] for group, field in _GROUP_HPARAMS.items()}
    for key in (
        "alpha",
        "beta",
        "delta",
        "adapt_steps",
        "adapt_batch",
        "local_steps",
        "batch_size",
        "num_clients",
        "fraction",
        "num_rounds",
        "seed",
        "aggregation",
        "eval_split",
    ):
        # only what the run reads (e.g. no delta without hessian=fd, no β for Local) and is set (adapt_batch)
        if reads_key(cfg, key) and cfg.get(key) is not None:
            params[key] = cfg[key]
    # the algorithm's own keys, as its declaration lists them (defaults filled in)
    params |= {f"algorithm.{key}": value for key, value in task.algorithm_options(cfg).items()}
    if not algorithms.declaration_of(cfg["algorithm"]["name"]).uses_hessian:
        params.pop("hessian")
    chosen: list[str] = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in NOT_HPARAMS or key.startswith("hydra.") or key in chosen or not reads_key(cfg, key):
            continue  # (a key the run does not read: e.g. perfedavg-tune's hessian=fo for Ditto)
        if key not in params:
            found: Any = cfg
            for part in key.split("."):
                found = found.get(part) if isinstance(found, Mapping) else None
            params[key] = value if found is None or isinstance(found, Mapping) else found
        chosen.append(key)
    ordered = {k: params[k] for k in chosen} | {k: v for k, v in params.items() if k not in chosen}
    return {k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in ordered.items()}, chosen


def run_overrides(run_dir: Path) -> list[str]:
    """The Hydra overrides recorded for the run in ``run_dir`` (none outside Hydra, e.g. ``flwr run`` or tests)."""
    saved = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return []
    import yaml

    return [str(o) for o in yaml.safe_load(saved.read_text()) or []]


def run_and_record(
    grid: Grid, cfg: dict[str, Any], run_dir: Path, transport: Transport | None = None
) -> dict[str, Any]:
    """Run the federation with TensorBoard logging into ``run_dir``; write ``metrics.json`` there too (the summary and
    the machine it ran on: ``"host"``)."""
    from perfedavg.federation.tracking import RunLogger

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load(run_dir) if cfg.get("resume") else None
    # Events of a round the interrupted run logged but did not checkpoint are dropped from the log.
    tracker = RunLogger(run_dir, purge_step=None if state is None else int(state["round"]) + 1)
    try:
        summary = Federation(grid, cfg, run_dir, tracker, resume_state=state, transport=transport).run()
        tracker.hparams(hparams_of(cfg, run_overrides(run_dir))[0])
    finally:
        tracker.close()
    # where the run computed (perfedavg.host): its bits at large steps can depend on the machine
    atomic.write_text(run_dir / "metrics.json", json.dumps({**summary, "host": host.describe()}, indent=1))
    return summary
