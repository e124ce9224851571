"""TensorBoard output of a run: per-round scalars, per-client histograms and the HPARAMS record (server side)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

#: TensorBoard's Custom Scalars tab: one chart per measure, one line per run in it (a chart of several tags draws
#: each run's tags in one colour told apart only by marker shape, so global and personalized could not be told apart
#: across runs). Accuracy first, then losses, then time.
CUSTOM_SCALARS: dict[str, dict[str, list]] = {
    "accuracy (test or validation)": {
        "personalized: after one step on the client's data": ["Multiline", ["eval/personalized_acc"]],
        "global model": ["Multiline", ["eval/global_acc"]],
    },
    "loss": {
        "personalized": ["Multiline", ["eval/personalized_loss"]],
        "global model": ["Multiline", ["eval/global_loss"]],
        "training (clients' mean)": ["Multiline", ["train/loss"]],
    },
    "time (s)": {
        "round": ["Multiline", ["time/round_s"]],
        "training phase": ["Multiline", ["time/train_s"]],
        "evaluation phase": ["Multiline", ["time/eval_s"]],
    },
}


class RunLogger:
    """Writes one run's event file into ``logdir`` (the Hydra run directory)."""

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        """``purge_step``: when resuming, events at this step and later from the earlier run are discarded."""
        self.logdir = Path(logdir)
        self.writer = SummaryWriter(log_dir=str(self.logdir), purge_step=purge_step)
        self.writer.add_custom_scalars(CUSTOM_SCALARS)

    def scalars(self, step: int, metrics: Mapping[str, float]) -> None:
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: Sequence[float], step: int) -> None:
        """A histogram of the finite ``values`` (TensorBoard cannot bin inf or NaN; none: nothing is written)."""
        finite = [float(v) for v in values if math.isfinite(float(v))]
        if finite:
            self.writer.add_histogram(tag, torch.tensor(finite, dtype=torch.float64), step, bins="auto")

    def hparams(self, params: Mapping[str, str | float | int | bool]) -> None:
        """Record hyper-parameters in this run's own event file (HPARAMS tab): the session's start (its values) and
        end (its status), and no experiment record of its own.

        Without one, TensorBoard builds the experiment from every run in its logdir (``backend_context.
        _compute_experiment_from_runs``): each key's domain is the values present (a string or integer key gets its
        discrete values, so the side panel filters by algorithm, hessian or seed), a key is marked as differing
        when the runs differ in it, keys only some runs have (pFedMe's λ) are included, and two sweeps under one
        logdir make one experiment. A run's own record would be taken for all of them (TensorBoard picks the first
        it finds). The metrics are every scalar tag; TensorBoard reads their last values from the per-round
        scalars, so no copy of the final values is written (copies would show as single-dot charts).

        ``SummaryWriter.add_hparams`` would write into a new sub-directory; writing the summaries to this writer
        keeps one directory per run. The HParams format knows only float numbers (TensorBoard shows 16 as
        "16.000"), so integers are recorded as their decimal text: a discrete domain, filtered by value.
        """
        shown = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in params.items()}
        _, session_start, session_end = hparams_summary(shown, {})
        file_writer = self.writer._get_file_writer()  # noqa: SLF001 - the documented way add_hparams itself works
        for summary in (session_start, session_end):
            file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
