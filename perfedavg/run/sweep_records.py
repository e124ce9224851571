"""A refused sweep job leaves the sweep's records as they were (issue 36 item 3).

Hydra writes a job's ``.hydra/`` (config.yaml, hydra.yaml, overrides.yaml) before the job runs, and the sweeper
writes ``multirun.yaml`` before the first job: a sweep repeated into the same ``hydra.sweep.dir`` with another config
(``alpha=0.2`` beside runs made with 0.05) would leave those records describing a config that never ran there, even
though every job is refused (the config does not match the checkpoint) and the command exits 2 — and a later
``resume=`` of such a job reads the wrong overrides.

:class:`SweepRecords` (a Hydra callback, ``conf/config.yaml``) copies the existing jobs' ``.hydra/`` and
``multirun.yaml`` into ``<sweep dir>/.hydra-records/`` when the multirun starts (before the sweeper writes), and
removes the copy when it ends; :func:`restored_on_refusal` puts a refused job's records (and ``multirun.yaml``) back
from that copy. The copy is on disk, so jobs a launcher runs in other processes (joblib) restore theirs too.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from perfedavg.errors import UserError

#: Where a multirun keeps the copy of its sweep directory's records while it runs.
BACKUP = ".hydra-records"


def back_up(sweep_dir: Path) -> None:
    """Copy ``multirun.yaml`` and every job's ``.hydra/`` under ``sweep_dir`` into :data:`BACKUP` (replacing an older
    copy a killed sweep left)."""
    target = sweep_dir / BACKUP
    shutil.rmtree(target, ignore_errors=True)
    if not sweep_dir.is_dir():
        return
    target.mkdir(parents=True)
    if (sweep_dir / "multirun.yaml").is_file():
        shutil.copy2(sweep_dir / "multirun.yaml", target / "multirun.yaml")
    for job in sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name != BACKUP):
        if (job / ".hydra").is_dir():
            shutil.copytree(job / ".hydra", target / "jobs" / job.name / ".hydra")


def restore(sweep_dir: Path, run_dir: Path) -> None:
    """Put ``run_dir``'s ``.hydra/`` and the sweep's ``multirun.yaml`` back as :func:`back_up` found them (a job
    directory that had no records keeps what Hydra wrote; nothing happens without a copy)."""
    saved = sweep_dir / BACKUP
    if not saved.is_dir():
        return
    records = saved / "jobs" / run_dir.name / ".hydra"
    if records.is_dir():
        shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
        shutil.copytree(records, run_dir / ".hydra")
    if (saved / "multirun.yaml").is_file():
        shutil.copy2(saved / "multirun.yaml", sweep_dir / "multirun.yaml")


@contextlib.contextmanager
def restored_on_refusal(sweep_dir: Path | None, run_dir: Path) -> Iterator[None]:
    """Around a sweep job (``sweep_dir``; None: a single run, nothing to do): a :class:`UserError` (the job is
    refused) first restores its records (:func:`restore`), then propagates."""
    try:
        yield
    except UserError:
        if sweep_dir is not None:
            restore(sweep_dir, run_dir)
        raise


class SweepRecords(Callback):
    """Hydra callback: the copy of the sweep directory's records for the length of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        back_up(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        shutil.rmtree(Path(str(config.hydra.sweep.dir)) / BACKUP, ignore_errors=True)
