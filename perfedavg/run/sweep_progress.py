"""A sweep-level progress line for Hydra multiruns: runs ended out of the total, elapsed time and an ETA.

Registered in ``conf/config.yaml`` as a Hydra callback. When a multirun starts (on the launching machine) it records
the number of jobs and the start time in ``<sweep dir>/.sweep_progress.json`` and starts an empty job log beside it;
after each job (in whichever process ran it: joblib workers, a SLURM node) one line is appended to that log and

    [sweep] 7/15 runs ended (1 failed) | 23m elapsed | ETA 26m

is printed. The ETA extrapolates this multirun's pace so far (finished runs that ``resume=auto`` keeps end at once
and make it optimistic early on). Several multiruns into one sweep directory (``perfedavg-reproduce`` runs one per
algorithm) each count their own jobs. A sweeper whose job count is not known in advance gets no total.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from perfedavg import atomic
from perfedavg.config import sweep_values
from perfedavg.federation.console import format_duration

log = logging.getLogger("perfedavg")

STATE_FILE = ".sweep_progress.json"


def count_jobs(task_overrides: list[str], n_trials: int | None = None) -> int | None:
    """How many jobs a basic sweep over ``task_overrides`` launches (the product of each sweep's number of values),
    or ``n_trials`` for an Optuna study; ``None`` where Hydra cannot list a sweep's values."""
    if n_trials:
        return int(n_trials)
    from hydra.core.override_parser.overrides_parser import OverridesParser

    total = 1
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        if override.is_sweep_override():
            values = sweep_values(override)
            if values is None:
                return None
            total *= len(values)
    return total


def progress_line(state: dict[str, Any], ended: list[dict[str, Any]], now: float | None = None) -> str:
    """The line for a multirun that started with ``state`` (``total``, ``start``) and whose ``ended`` jobs are
    ``[{"num", "ok"}, …]``."""
    now = time.time() if now is None else now
    total, done = state.get("total"), len(ended)
    failed = sum(not e.get("ok", True) for e in ended)
    head = f"[sweep] {done}/{total if total else '?'} runs ended" + (f" ({failed} failed)" if failed else "")
    elapsed = now - float(state["start"])
    parts = [head, f"{format_duration(elapsed)} elapsed"]
    if total and done >= total:
        parts.append("all done")
    elif total and done:
        parts.append(f"ETA {format_duration(elapsed / done * (total - done))}")
    return " | ".join(parts)


class SweepProgress(Callback):
    """Hydra callback: see the module docstring."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        sweep_dir = Path(str(hydra_cfg.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            total = count_jobs(list(hydra_cfg.overrides.task), hydra_cfg.sweeper.get("n_trials"))
        except Exception:  # noqa: BLE001 - progress must never stop a sweep
            total = None
        start = time.time()
        job_log = f".sweep_progress-{start:.6f}.jsonl"
        (sweep_dir / job_log).touch()
        atomic.write_text(sweep_dir / STATE_FILE, json.dumps({"total": total, "start": start, "log": job_log}))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        try:
            hydra_cfg = HydraConfig.get()
            if hydra_cfg.mode != RunMode.MULTIRUN:
                return
            sweep_dir = Path(str(hydra_cfg.sweep.dir))
            state = json.loads((sweep_dir / STATE_FILE).read_text())
            job_log = sweep_dir / state["log"]
            entry = {"num": int(hydra_cfg.job.num), "ok": job_return.status == JobStatus.COMPLETED}
            with open(job_log, "a") as f:  # one short line per write: appends from parallel workers do not mix
                f.write(json.dumps(entry) + "\n")
            ended = [json.loads(line) for line in job_log.read_text().splitlines() if line.strip()]
        except Exception:  # noqa: BLE001 - progress must never stop a sweep (no state: started without this callback)
            return
        log.info(progress_line(state, ended))
