"""TensorBoard output of a run: per-round scalars, per-client histograms and the HPARAMS record (server side)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

#: TensorBoard's Custom Scalars tab: per run, the curves a reader compares on one chart.
CUSTOM_SCALARS: dict[str, dict[str, list]] = {
    "perfedavg": {
        "accuracy: global vs personalized": ["Multiline", ["eval/global_acc", "eval/personalized_acc"]],
        "loss: training, global, personalized": [
            "Multiline",
            ["train/loss", "eval/global_loss", "eval/personalized_loss"],
        ],
        "round time and its phases (s)": ["Multiline", ["time/round_s", "time/train_s", "time/eval_s"]],
    }
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

    def hparams(
        self,
        params: Mapping[str, str | float | int | bool],
        metrics: Sequence[str],
        first: Sequence[str] = (),
        differing: Sequence[str] | None = None,
    ) -> None:
        """Record hyper-parameters in this run's own event file (HPARAMS tab), with ``metrics``: the scalar tags
        (e.g. ``eval/personalized_acc``) whose last value the table shows. TensorBoard reads those from the run's own
        per-round scalars, so no copy of the final values is written (copies would show as single-dot charts).

        ``SummaryWriter.add_hparams`` would write them into a new sub-directory; writing the three summaries to
        this writer keeps one directory per run, so a sweep's runs line up in the HPARAMS table.

        The HParams format knows only float numbers (TensorBoard shows 16 as "16.000"), so integers are recorded as
        their decimal text (filtered by value, sorted as text). ``first``: names the command chose (a sweep's swept
        keys first); they lead the table. ``differing`` (default: ``first``) are marked as differing between runs,
        which is what TensorBoard shows by default (its first five hyper-parameters, differing ones first): in a
        sweep, the swept keys only.
        """
        shown = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in params.items()}
        exp, ssi, sei = hparams_summary(shown, dict.fromkeys(metrics, 0.0))  # only the tags are recorded
        _lead_with(exp, list(first), list(first if differing is None else differing))
        file_writer = self.writer._get_file_writer()  # noqa: SLF001 - the documented way add_hparams itself works
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _lead_with(experiment_summary: Summary, first: list[str], differing: list[str]) -> None:
    """Reorder the Experiment record's hyper-parameters in place: ``first`` (in that order), then the rest as given;
    mark ``differing`` as ``differs``."""
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    value = experiment_summary.value[0]
    data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
    infos = list(data.experiment.hparam_infos)
    rank = {name: i for i, name in enumerate(first)}
    infos.sort(key=lambda info: rank.get(info.name, len(first)))
    for info in infos:
        info.differs = info.name in differing
    data.experiment.ClearField("hparam_infos")
    data.experiment.hparam_infos.extend(infos)
    value.metadata.plugin_data.content = data.SerializeToString()
