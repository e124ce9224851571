"""TensorBoard output of a run: per-round scalars, per-client histograms and the HPARAMS record (server side)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary


class RunLogger:
    """Writes one run's event file into ``logdir`` (the Hydra run directory)."""

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        """``purge_step``: when resuming, events at this step and later from the earlier run are discarded."""
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(log_dir=str(self.logdir), purge_step=purge_step)

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: Sequence[float], step: int) -> None:
        """A histogram of the finite ``values`` (TensorBoard cannot bin inf or NaN; none: nothing is written)."""
        finite = [float(v) for v in values if math.isfinite(float(v))]
        if finite:
            self.writer.add_histogram(tag, torch.tensor(finite, dtype=torch.float64), step, bins="auto")

    def hparams(self, params: Mapping[str, str | float | int | bool], final: Mapping[str, float]) -> None:
        """Record hyper-parameters and final metrics in this run's own event file (HPARAMS tab).

        ``SummaryWriter.add_hparams`` would write them into a new sub-directory; writing the three summaries to
        this writer keeps one directory per run, so a sweep's runs line up in the HPARAMS table.
        """
        exp, ssi, sei = hparams_summary(dict(params), dict(final))
        file_writer = self.writer._get_file_writer()  # noqa: SLF001 - the documented way add_hparams itself works
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, 0)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
