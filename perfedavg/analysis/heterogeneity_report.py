"""Compare methods across degrees of heterogeneity: a Markdown report and one figure from the test runs of
``perfedavg-heterogeneity``.

    perfedavg-heterogeneity-report OUT_DIR [OUT_DIR ...] [--key partition.alpha] [--out F.md] [--figure F.png]

Every run under the OUT_DIRs (``OUT_DIR/<level>/runs/<run>/``, found by their ``.hydra/config.yaml`` as
``perfedavg-report`` finds them) belongs to one cell: its data set and its value of ``--key`` (the level; for
``partition.alpha``, the Dirichlet concentration α_D: large is near-IID, small is extreme). Per cell and method it
gives the final personalized test accuracy (mean ± sample std over seeds) and, on the same seeds, the difference to
FedAvg and HF (hvp) − FO: the mean, its 95 % interval (t distribution) and the paired t-test's p. Runs that stopped
before their last round (diverged) are listed per cell and left out of the numbers; a pair needs both runs. Runs
that finished at chance level (:func:`is_collapsed`: a divergence whose values stayed finite) stay in the numbers, as
the method's outcome on that seed, and are listed beside the stopped ones. How
skewed the users' label mixes are is measured on the data of the cell's lowest seed (:func:`label_skew`).

The figure has two panels against the level (log scale, most heterogeneous on the right): the personalized-accuracy
gain of each method over FedAvg, and HF − FO, one line per data set (and method), error bars the 95 % intervals. A
point leaves out the seeds where either method collapsed (an open marker says how many; the table keeps them).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from perfedavg.analysis import report  # reading runs, method names, the paired test
from perfedavg.analysis.results_file import recording
from perfedavg.federation.divergence import at_chance

TAG = "eval/personalized_acc"
LOSS = "eval/personalized_loss"
FEDAVG = "FedAvg"
FO = report.FO
HF = "Per-FedAvg (HF, hvp)"
DATASET_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "digits": "digits"}


@dataclass
class Cell:
    """The runs of one (data set, level)."""

    dataset: str
    level: float
    runs: dict[str, list[report.Run]] = field(default_factory=lambda: defaultdict(list))  # method → finished runs
    stopped: list[report.Run] = field(default_factory=list)

    @property
    def collapsed(self) -> list[report.Run]:
        """The finished runs that ended at chance level (in the numbers, listed beside the stopped ones)."""
        return [r for runs in self.runs.values() for r in sorted(runs, key=lambda r: r.seed) if is_collapsed(r)]


def is_collapsed(run: report.Run) -> bool:
    """Whether a finished run's final personalized accuracy is at chance level (at most 1.5 / num_classes, 0.15 for
    10 classes: :func:`perfedavg.federation.divergence.at_chance`): it diverged, but its values stayed finite (a
    loss of 1e17 is finite), so the federation did not stop it."""
    return at_chance(report.final_value(run, TAG), int(run.config["dataset"].get("num_classes") or 0))


def _failed_runs(cell: Cell) -> str:
    """``Per-FedAvg (HF, hvp) seed 2 stopped, seed 3 collapsed``, or ``none``."""
    named = [(r.method, r.seed, "stopped") for r in cell.stopped]
    named += [(r.method, r.seed, "collapsed") for r in cell.collapsed]
    by_method: dict[str, list[str]] = defaultdict(list)
    for method, seed, how in sorted(named, key=lambda x: (x[0], x[1])):
        by_method[method].append(f"seed {seed} {how}")
    return "; ".join(f"{method} {', '.join(items)}" for method, items in by_method.items()) or "none"


@dataclass
class Difference:
    """Per-seed differences of final personalized accuracy between two methods on the same seeds."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")

    def interval(self) -> tuple[float, float]:
        """The 95 % interval of the mean (t distribution); (nan, nan) with fewer than two pairs or no spread."""
        from scipy import stats

        if self.n < 2 or float(np.std(self.values)) == 0.0:
            return float("nan"), float("nan")
        low, high = stats.ttest_1samp(self.values, 0.0).confidence_interval(confidence_level=0.95)
        return float(low), float(high)

    def cell(self) -> str:
        """``+0.0123 [+0.0040, +0.0206], p = 0.02, 3/3``, or ``–`` without pairs."""
        if not self.values:
            return "–"
        interval, p = report.paired_test(self.values)
        ahead = sum(v > 0 for v in self.values)
        return f"{self.mean():+.4f} {interval}, p = {p}, {ahead}/{self.n}"


def level_of(run: report.Run, key: str) -> float:
    node = run.config
    for part in key.split("."):
        node = node[part]
    return float(node)


def collect(out_dirs: list[Path], key: str) -> list[Cell]:
    """The cells of every run under ``out_dirs``, by data set, then by level from the least heterogeneous."""
    cells: dict[tuple[str, float], Cell] = {}
    for out_dir in out_dirs:
        sweeps = sorted(out_dir.glob("*/runs")) or [out_dir]  # perfedavg-heterogeneity's layout, or one sweep
        runs = [run for sweep in sweeps for run in report.find_runs(sweep)[0]]  # not the tuning's (validation) runs
        for run in runs:
            ident = (str(run.config["dataset"]["name"]), level_of(run, key))
            cell = cells.setdefault(ident, Cell(*ident))
            if report.finished(run) and TAG in run.curves:
                cell.runs[run.method].append(run)
            else:
                cell.stopped.append(run)
    return sorted(cells.values(), key=lambda c: (c.dataset, -c.level))


def label_skew(run: report.Run) -> tuple[float, float] | None:
    """How heterogeneous a run's users are: the mean over users of the share of a user's most frequent training
    label, and the mean number of labels that make up 90 % of a user's training examples (the run's own seed and
    data; None if its data cannot be loaded here). 1/num_classes and num_classes for identical label mixes."""
    import torch

    from perfedavg.data import data_params, load_client

    cfg = run.config
    try:
        params = data_params(cfg)
        clients = [load_client(params, i, int(cfg["num_clients"]), int(cfg["seed"])) for i in range(cfg["num_clients"])]
    except Exception:  # noqa: BLE001 - a data set not at hand here: the column says so
        return None
    top, cover = [], []
    for client in clients:
        counts = torch.bincount(client.y_train.long()).sort(descending=True).values.double()
        shares = counts / counts.sum()
        top.append(float(shares[0]))
        cover.append(int((shares.cumsum(0) < 0.9).sum()) + 1)
    return float(np.mean(top)), float(np.mean(cover))


def difference(cell: Cell, method: str, baseline: str, stable_only: bool = False) -> Difference:
    """``method`` − ``baseline`` on their common seeds; ``stable_only``: without the seeds where either collapsed."""
    keep = (lambda r: not is_collapsed(r)) if stable_only else (lambda r: True)
    base = {r.seed: report.final_value(r, TAG) for r in cell.runs.get(baseline, []) if keep(r)}
    runs = [r for r in cell.runs.get(method, []) if keep(r) and r.seed in base]
    return Difference([report.final_value(r, TAG) - base[r.seed] for r in runs])


def _title(dataset: str) -> str:
    return DATASET_TITLES.get(dataset, dataset)


def summary_table(cells: list[Cell], key: str) -> str:
    """One row per cell: FedAvg's accuracy, each other method's gain over it, and HF − FO."""
    methods = report.ordered(sorted({m for c in cells for m in c.runs if m != FEDAVG}))
    head = ["data set", key, "users' top label / labels for 90 %", "FedAvg", *[f"{m} − FedAvg" for m in methods]]
    head += ["HF (hvp) − FO", "stopped or collapsed runs"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in cells:
        fedavg = [report.final_value(r, TAG) for r in c.runs.get(FEDAVG, [])]
        any_run = next(r for runs in c.runs.values() for r in sorted(runs, key=lambda r: r.seed))
        skew = label_skew(any_run)
        cells_ = [_title(c.dataset), f"{c.level:g}", f"{skew[0]:.2f} / {skew[1]:.1f}" if skew else "–"]
        cells_.append(report.mean_std(fedavg) if fedavg else "–")
        cells_ += [difference(c, m, FEDAVG).cell() for m in methods]
        cells_.append(difference(c, HF, FO).cell())
        cells_.append(_failed_runs(c))
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def cell_section(cell: Cell, key: str) -> str:
    """A cell's own table: per method its step sizes and final accuracies, as perfedavg-report writes them."""
    lines = [f"### {_title(cell.dataset)}, {key} = {cell.level:g}", "", report.table(cell.runs, report.CLASSIFICATION)]
    if cell.stopped:
        lines += ["", "Stopped before their last round (not in the numbers):", ""]
        lines += [f"- {r.path.name} ({r.method}, seed {r.seed}): {report.stop_reason(r)}" for r in cell.stopped]
    if cell.collapsed:
        lines += ["", "Finished at chance level (collapsed; in the numbers above):", ""]
        lines += [
            f"- {r.path.name} ({r.method}, seed {r.seed}): final personalized accuracy {report.final_value(r, TAG):.4f}"
            + (f", loss {report.final_value(r, LOSS):.3g}" if LOSS in r.curves else "")
            for r in cell.collapsed
        ]
    return "\n".join(lines)


def plot(cells: list[Cell], key: str, out: Path) -> None:
    """Two panels against the level: each method's gain over FedAvg, and HF − FO; error bars: 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120)
    methods = report.ordered(sorted({m for c in cells for m in c.runs if m != FEDAVG}))
    datasets = sorted({c.dataset for c in cells})
    markers = ["o", "s", "^", "D", "v", "P"]
    styles = ["-", "--", ":", "-."]
    colours = plt.get_cmap("tab10")
    spread = {d: 1.0 + 0.04 * (i - (len(datasets) - 1) / 2) for i, d in enumerate(datasets)}  # no overlapping bars

    def draw(ax, dataset: str, method: str, baseline: str, colour, marker: str, style: str) -> None:
        here = [c for c in cells if c.dataset == dataset]
        points = [(c, difference(c, method, baseline, stable_only=True)) for c in here]
        points = [(c, d) for c, d in points if d.n]
        if not points:
            return
        levels = np.array([c.level * spread[dataset] for c, _ in points])
        means = np.array([d.mean() for _, d in points])
        bounds = np.array([d.interval() for _, d in points])
        err = np.abs(np.nan_to_num(np.stack([means - bounds[:, 0], bounds[:, 1] - means]), nan=0.0))
        label = f"{_title(dataset)}: {method}" + ("" if baseline == FEDAVG else f" − {baseline}")
        ax.errorbar(levels, means, yerr=err, color=colour, marker=marker, linestyle=style, capsize=3, label=label)
        for (cell, stable), x, y in zip(points, levels, means):  # seeds left out: an open marker, the count beside it
            left_out = difference(cell, method, baseline).n - stable.n
            if left_out:
                ax.plot([x], [y], marker=marker, color=colour, markerfacecolor="white", markersize=9, linestyle="")
                ax.annotate(f"{left_out} collapsed", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=7)

    for i, dataset in enumerate(datasets):
        for j, method in enumerate(methods):
            draw(left, dataset, method, FEDAVG, colours(j), markers[j % len(markers)], styles[i % len(styles)])
        draw(right, dataset, HF, FO, colours(i), markers[i % len(markers)], styles[i % len(styles)])
    for ax, title in (
        (left, "personalized accuracy − FedAvg's (same seeds)"),
        (right, "HF (hvp) − FO, personalized accuracy (same seeds)"),
    ):
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.invert_xaxis()  # more heterogeneous (smaller α_D) to the right
        ax.set_xlabel(f"{key} (log scale; more heterogeneous →)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(
        "Final personalized test accuracy against heterogeneity: mean difference, bars 95 % intervals\n"
        "(open marker: seeds where a run collapsed to chance level left out of that point)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perfedavg-heterogeneity-report", description=__doc__.splitlines()[0])
    parser.add_argument("out_dirs", type=Path, nargs="+", help="perfedavg-heterogeneity's OUT_DIRs (one per data set)")
    parser.add_argument("--key", default="partition.alpha", help="the config key whose value is the level")
    parser.add_argument("--out", help="also write the report here (Markdown)")
    parser.add_argument("--figure", type=Path, help="the figure (PNG); default: next to --out, else not drawn")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.out_dirs if not d.is_dir()]
    if missing:
        print(f"heterogeneity_report: error: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        cells = collect(args.out_dirs, args.key)
    except KeyError as e:
        print(f"heterogeneity_report: error: --key {args.key}: the runs' configs have no {e}", file=sys.stderr)
        return 2
    if not any(c.runs for c in cells):
        print(
            f"heterogeneity_report: error: no finished test runs under {', '.join(map(str, args.out_dirs))}",
            file=sys.stderr,
        )
        return 2
    figure = args.figure or (Path(args.out).with_suffix(".png") if args.out else None)
    seeds = sorted({r.seed for c in cells for runs in c.runs.values() for r in runs})
    with recording(args.out):
        print("# Heterogeneity: the methods against the degree of heterogeneity")
        print()
        first = next(r for c in cells for rs in c.runs.values() for r in rs)
        setting = report.describe(first)
        datasets = sorted({c.dataset for c in cells})
        if len(datasets) > 1:  # the row names the data set
            setting = setting.replace(f"dataset={first.config['dataset']['name']}", f"dataset={' or '.join(datasets)}")
        print(
            f"Setting: {setting}; the level is {args.key}. Final personalized test accuracy; "
            f"differences on the same seeds ({', '.join(map(str, seeds))}), with the 95 % interval of their mean, "
            "the paired t-test's p and on how many seeds the first is ahead."
        )
        print()
        print(summary_table(cells, args.key))
        print()
        if figure:
            plot(cells, args.key, figure)
            print(f"![gain over FedAvg and HF − FO against {args.key}]({figure.name})")
            print()
        print("## Per data set and level")
        for cell in cells:
            print()
            print(cell_section(cell, args.key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
