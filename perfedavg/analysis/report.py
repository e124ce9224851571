"""Summarise a sweep: a Markdown table and accuracy-vs-round plots from the runs' TensorBoard event files.

    perfedavg-report SWEEP_DIR
    perfedavg-report SWEEP_DIR [SWEEP_DIR ...] --out scripts/results/NAME.md   # committed results

Every directory under SWEEP_DIR with a ``.hydra/config.yaml`` and event files is one run; runs are grouped by
method (algorithm and Hessian mode) and summarised over their seeds. Writes into SWEEP_DIR:

- ``report.md``: per method, the number of runs, its step sizes α and β, and the final global and personalized
  accuracy (mean ± sample standard deviation over seeds; losses for regression data); the paired differences to
  FedAvg and FO; the runs that stopped early or collapsed on the way; and, where the stability monitor could warn
  (runs that apply (I − αH)), in how many runs it did and how many rounds before each collapse;
- ``personalized_acc.png`` and ``global_acc.png``: the curve per method (mean over seeds) with a band of ± one
  standard deviation;
- when the runs logged curvature diagnostics (``diagnostics.every``, ``perfedavg-reproduce --diagnostics N``): a
  table of them per method, ``curvature.png``, one line per run (runs that stopped early dashed: their last
  rounds are often the instructive ones), and ``curvature.csv``, one row per run and diagnosed round, the values
  behind the table's medians;
- ``runs.csv``: one row per finished run (method, seed, step sizes, final values, the round of the monitor's first
  warning), the per-seed numbers behind the tables, so a later comparison can be checked against them.

With ``--out FILE`` the same report also goes to FILE (under a comment naming the command and commit), its plots
and CSV beside it as ``<FILE's stem>_<name>``; several sweep directories then give one section each.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from perfedavg import algorithms
from perfedavg.config import reads_key
from perfedavg.curvature.stability import TAG_PREFIX, WARNING_PATTERN
from perfedavg.federation.divergence import COLLAPSE_FACTOR, collapsed_round

#: (metric tag, column title), in table order; regression runs have losses instead of accuracies.
CLASSIFICATION = [("eval/global_acc", "global accuracy"), ("eval/personalized_acc", "personalized accuracy")]
REGRESSION = [("eval/global_loss", "global loss"), ("eval/personalized_loss", "personalized loss")]
FO = algorithms.method_title("fo")
#: The table order: the methods as the algorithms' declarations list them (the baselines, Per-FedAvg's FO and HF,
#: the other personalized methods); Per-FedAvg's dense modes (exact, diag: checks of the estimates) sort after.
ORDER = [algorithms.method_title(m) for m in algorithms.methods() if m not in ("exact", "diag")]


@dataclass
class Run:
    path: Path
    method: str
    seed: int
    config: dict
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # tag → (rounds, values)


def method_of(config: dict) -> str:
    """The run's method as tables name it: Per-FedAvg with its correction (FO, HF for fd and hvp, else the mode), the
    other algorithms by their declared titles (FedAvg, pFedMe, Ditto, …)."""
    return algorithms.method_title(algorithms.method_of(config["algorithm"]["name"], config["hessian"]["mode"]))


def read_run(run_dir: Path) -> Run | None:
    from omegaconf import OmegaConf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from perfedavg.config import register_schema

    register_schema()  # the resolvers a run's config may use (per-method step sizes: ${per_method:alpha})
    config = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=True)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    tags = set(events.Tags().get("scalars", []))
    curves = {}
    for tag in tags:
        points = events.Scalars(tag)
        curves[tag] = (np.array([p.step for p in points]), np.array([p.value for p in points], dtype=float))
    if not curves:
        return None
    return Run(run_dir, method_of(config), int(config["seed"]), config, curves)


def find_runs(sweep_dir: Path) -> tuple[list[Run], list[Path]]:
    """(runs with event files, run directories without any: still running, failed or empty). The copy of the
    records that a multirun keeps while it runs (:data:`perfedavg.run.sweep_records.BACKUP`, left behind by a killed
    sweep) holds no runs."""
    from perfedavg.run.sweep_records import BACKUP

    runs, empty = [], []
    for hydra_cfg in sorted(sweep_dir.rglob(".hydra/config.yaml")):
        run_dir = hydra_cfg.parent.parent
        if BACKUP in run_dir.relative_to(sweep_dir).parts:
            continue
        run = read_run(run_dir) if list(run_dir.glob("events.out.tfevents*")) else None
        (runs.append(run) if run else empty.append(run_dir))
    return runs, empty


def hosts(runs: Sequence[Run]) -> str:
    """The machines the runs computed on, as their ``metrics.json`` records them (:mod:`perfedavg.host`), each with
    its number of runs: ``Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1 (AVX512): 20 runs``; runs from before
    the record, or without a ``metrics.json``, count as "not recorded"."""
    import json
    from collections import Counter

    from perfedavg import host

    counts: Counter[str] = Counter()
    for run in runs:
        try:
            recorded = json.loads((run.path / "metrics.json").read_text()).get("host")
        except (OSError, ValueError):
            recorded = None
        counts[host.label(recorded) if isinstance(recorded, dict) else "not recorded"] += 1
    return "; ".join(f"{name}: {n} run{'s' if n != 1 else ''}" for name, n in counts.items())


def last_round(run: Run) -> int:
    return max(int(steps[-1]) for steps, _ in run.curves.values() if len(steps))


def finished(run: Run) -> bool:
    """Whether the run reached its configured last round (a run that stopped, e.g. diverged, did not)."""
    return last_round(run) >= int(run.config["num_rounds"])


def stop_reason(run: Run) -> str:
    """Where a run stopped and why, from Hydra's log of the job in its directory (``federation stopped: …``): named
    after the task function's module, ``main.log`` (``cli.log`` in runs from before the CLI became a package)."""
    lines = [
        line
        for log in sorted(run.path.glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if "federation stopped:" in line
    ]
    why = (
        lines[-1].split("federation stopped:", 1)[1].split(" (logs so far")[0].strip()
        if lines
        else "no reason logged (still running, or cut off)"
    )
    return f"last logged round {last_round(run)} of {run.config['num_rounds']}; {why[:160]}"


def collapse_of(run: Run) -> int | None:
    """The round where the run's training loss collapsed (:func:`perfedavg.federation.divergence.collapsed_round`,
    from its logged curve), or None."""
    steps, values = run.curves.get("train/loss", ((), ()))
    return collapsed_round([{"round": int(s), "train/loss": float(v)} for s, v in zip(steps, values, strict=True)])


def can_warn(run: Run) -> bool:
    """Whether the run's stability monitor could warn: it probed (its curves are logged) in a run that applies
    (I − αH); first-order runs are measured, never warned about (docs/curvature.md#stability)."""
    return TAG_PREFIX + "fraction_above_2" in run.curves and run.method != FO


def stability_warning(run: Run) -> int | None:
    """The round of the stability monitor's first warning in the run's job log (``round R: α·λ_max > …``), or None."""
    for log in sorted(run.path.glob("*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if found := WARNING_PATTERN.search(line):
                return int(found.group(1))
    return None


def final_value(run: Run, tag: str) -> float:
    return float(run.curves[tag][1][-1])


def mean_std(values: list[float]) -> str:
    """``0.9834 ± 0.0025``; one value has no spread to show (``0.0521 (one run)``)."""
    if len(values) == 1:
        return f"{values[0]:.4f} (one run)"
    return f"{np.mean(values):.4f} ± {float(np.std(values, ddof=1)):.4f}"


def ordered(methods: list[str]) -> list[str]:
    return [m for m in ORDER if m in methods] + sorted(m for m in methods if m not in ORDER)


#: Algorithms that read λ (``algorithm.lam``, from their declarations): the table gets a λ column when one is in it.
READS_LAM = tuple(name for name, d in algorithms.declarations().items() if d.key("lam") is not None)


def step_cell(runs: list[Run], key: str) -> str:
    """The runs' values of ``key`` (``1e-2/3e-2``), or ``–`` where their algorithm does not read it (Local's β)."""
    values = sorted({float(r.config[key]) for r in runs if reads_key(r.config, key)})
    return "/".join(f"{v:g}" for v in values) or "–"


def table(by_method: dict[str, list[Run]], metrics: list[tuple[str, str]]) -> str:
    with_lam = any(r.config["algorithm"]["name"] in READS_LAM for runs in by_method.values() for r in runs)
    with_adapt = any(int(r.config["adapt_steps"]) != 1 for runs in by_method.values() for r in runs)
    head = ["method", "runs (seeds)", "rounds", "α", "β", *(["λ"] if with_lam else [])]
    head += ["adapt_steps"] if with_adapt else []
    head += [f"final {title}" for _, title in metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in ordered(list(by_method)):
        runs = by_method[method]
        rounds = sorted({int(r.curves[metrics[0][0]][0][-1]) for r in runs})
        seeds = ",".join(str(s) for s in sorted(r.seed for r in runs))
        cells = [method, f"{len(runs)} ({seeds})", "/".join(map(str, rounds))]
        cells += [step_cell(runs, k) for k in ("alpha", "beta")]
        if with_lam:
            lams = sorted(
                {float(r.config["algorithm"]["lam"]) for r in runs if r.config["algorithm"]["name"] in READS_LAM}
            )
            cells.append("/".join(f"{v:g}" for v in lams) or "–")
        if with_adapt:
            cells.append("/".join(str(v) for v in sorted({int(r.config["adapt_steps"]) for r in runs})))
        cells += [mean_std([final_value(r, tag) for r in runs]) for tag, _ in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_t(diffs: list[float]) -> tuple[float, float, float] | None:
    """The 95 % confidence interval (low, high) of the mean of per-seed differences and the two-sided p-value of the
    paired t-test (a one-sample t-test of the differences against 0, which is scipy's ``ttest_rel``), unrounded;
    None with fewer than two pairs or no spread."""
    from scipy import stats

    if len(diffs) < 2 or float(np.std(diffs)) == 0.0:
        return None
    result = stats.ttest_1samp(diffs, 0.0)
    low, high = result.confidence_interval(confidence_level=0.95)
    return float(low), float(high), float(result.pvalue)


def paired_test(diffs: list[float]) -> tuple[str, str]:
    """:func:`paired_t` as table cells: the interval to four decimals and p to two significant digits; "–" where
    it gives none."""
    test = paired_t(diffs)
    if test is None:
        return "–", "–"
    low, high, p = test
    return f"[{low:+.4f}, {high:+.4f}]", f"{p:.2g}"


def paired(by_method: dict[str, list[Run]], tag: str, title: str, baseline: str = "FedAvg") -> str | None:
    """Per method listed after ``baseline``, the difference to it on the same seeds (same data, same initial model):
    mean ± std of the per-seed differences, the 95 % interval of their mean and the paired t-test's p, and on how
    many seeds the method is ahead. Seeds remove most of the spread between data sets, which the unpaired table
    keeps."""
    if baseline not in by_method:
        return None
    base = {r.seed: final_value(r, tag) for r in by_method[baseline]}
    head = f"| method | Δ final {title} vs {baseline}, same seeds | 95 % interval | p (paired t) | ahead on |"
    lines = [head, "|---|---|---|---|---|"]
    methods = ordered(list(by_method))
    for method in methods[methods.index(baseline) + 1 :]:  # the methods listed after it (FO: the HF variants)
        diffs = [final_value(r, tag) - base[r.seed] for r in by_method[method] if r.seed in base]
        if diffs:
            interval, p = paired_test(diffs)
            ahead = sum(d > 0 for d in diffs)
            lines.append(f"| {method} | {mean_std(diffs)} | {interval} | {p} | {ahead}/{len(diffs)} seeds |")
    return "\n".join(lines) if len(lines) > 2 else None  # nothing listed after the baseline: no table


def whole_rounds(ax: Any, rounds: Sequence[float]) -> None:
    """Round ticks at whole numbers only (no 1.5, 2.5 on short runs), also when few rounds were logged."""
    from matplotlib.ticker import MaxNLocator

    if len(rounds) and max(rounds) - min(rounds) < 2:
        ax.set_xlim(min(rounds) - 1, max(rounds) + 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot(by_method: dict[str, list[Run]], tag: str, title: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for method in ordered(list(by_method)):
        runs = by_method[method]
        common = sorted(set.intersection(*(set(r.curves[tag][0].tolist()) for r in runs)))
        values = np.array([[dict(zip(*r.curves[tag]))[s] for s in common] for r in runs])
        mean, std = values.mean(axis=0), values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(common))
        (line,) = ax.plot(common, mean, label=f"{method} (n={len(runs)})")
        ax.fill_between(common, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel("round")
    whole_rounds(ax, common)
    ax.set_ylabel(title)
    ax.set_title(f"{title}: mean over seeds, band ± 1 std")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


#: Curvature diagnostics (perfedavg.curvature.diagnostics.NAMES) as logged, with their titles; in table and panel order.
DIAGNOSTICS = [
    ("curvature/correction_ratio", "‖αHg‖ / ‖g‖"),
    ("curvature/cosine_to_fo", "cos((I − αH)g, g)"),
    ("curvature/fd_rel_error", "fd error ‖Ĥg − Hg‖ / ‖Hg‖"),
    ("curvature/top_eigenvalue", "λ_max(H) on D″"),
]


def curvature_table(by_method: dict[str, list[Run]]) -> str:
    """Per method (runs that logged diagnostics, stopped ones included): each diagnostic's median over all its
    diagnosed rounds and runs, and α·λ_max (median and largest), the number that says whether (I − αH) reverses
    the gradient along the sharpest direction (α·λ_max > 1)."""
    head = ["method", "runs", "diagnosed rounds", *[title for _, title in DIAGNOSTICS], "α·λ_max median / max"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in ordered(list(by_method)):
        runs = [r for r in by_method[method] if DIAGNOSTICS[0][0] in r.curves]
        if not runs:
            continue
        cells = [
            method,
            str(len(runs)),
            "/".join(str(n) for n in sorted({len(r.curves[DIAGNOSTICS[0][0]][0]) for r in runs})),
        ]
        for tag, _ in DIAGNOSTICS:
            values = np.concatenate([r.curves[tag][1] for r in runs if tag in r.curves])
            cells.append(f"{np.nanmedian(values):.3g}" if np.isfinite(values).any() else "—")
        scaled = np.concatenate([float(r.config["alpha"]) * r.curves[DIAGNOSTICS[3][0]][1] for r in runs])
        cells.append(f"{np.nanmedian(scaled):.3g} / {np.nanmax(scaled):.3g}" if np.isfinite(scaled).any() else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: The cost columns of curvature.csv: the diagnostics' mean time per client, and each client's whole handler
#: (local update, diagnostics and encoding), both in seconds, as logged at the diagnosed round.
DIAGNOSTIC_TIMES = ("time/diagnostics_s", "time/client_compute_s")


def curvature_csv(by_method: dict[str, list[Run]]) -> str:
    """One line per diagnosed round of each run that logged diagnostics (methods in table order, then seeds, then
    rounds): method, seed, α, round, the four diagnostics and their cost at that round (:data:`DIAGNOSTIC_TIMES`;
    full precision, ``nan`` where a round has no value), and the run's directory name. Every value behind
    :func:`curvature_table`'s medians, stopped runs included."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    tags = [tag for tag, _ in DIAGNOSTICS] + list(DIAGNOSTIC_TIMES)
    writer.writerow(["method", "seed", "alpha", "round", *tags, "run"])
    for method in ordered(list(by_method)):
        for run in sorted(by_method[method], key=lambda r: r.seed):
            rounds = run.curves[DIAGNOSTICS[0][0]][0]
            columns = [dict(zip(*run.curves[tag])) if tag in run.curves else {} for tag in tags]
            for step in rounds:
                values = [repr(float(column.get(step, float("nan")))) for column in columns]
                writer.writerow([method, run.seed, run.config["alpha"], int(step), *values, run.path.name])
    return out.getvalue()


#: Per method in display order: a colour map (one shade per seed) and a marker, so that methods whose lines
#: coincide (fd under hvp) still show, and seeds can be told apart.
METHOD_STYLES = [("Greys", "o"), ("Blues", "s"), ("Oranges", "^"), ("Greens", "D"), ("Purples", "v"), ("Reds", "P")]


def plot_curvature(by_method: dict[str, list[Run]], out: Path) -> None:
    """One panel per diagnostic (log scale where positive), one line per run: each method its own colour and
    marker, each seed its own shade of that colour (light: lowest seed, dark: highest); stopped runs dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), dpi=120)
    for k, method in enumerate(ordered(list(by_method))):
        i = ORDER.index(method) if method in ORDER else len(ORDER) + k  # fixed per method, whatever else is shown
        cmap_name, marker = METHOD_STYLES[i % len(METHOD_STYLES)]
        cmap = plt.get_cmap(cmap_name)
        runs = sorted((r for r in by_method[method] if DIAGNOSTICS[0][0] in r.curves), key=lambda r: r.seed)
        seeds = ",".join(str(r.seed) for r in runs)
        for j, run in enumerate(runs):
            shade = cmap(0.45 + 0.5 * j / max(len(runs) - 1, 1))
            label = f"{method}, seeds {seeds} light→dark" if j == len(runs) - 1 else None
            for ax, (tag, _) in zip(axes.flat, DIAGNOSTICS):
                steps, values = run.curves[tag]
                ax.plot(
                    steps,
                    values,
                    color=shade,
                    marker=marker,
                    markersize=3.5,
                    markerfacecolor="none" if i % 2 else shade,  # alternate hollow markers: overlaps stay visible
                    linewidth=0.9,
                    alpha=0.85,
                    linestyle="-" if finished(run) else "--",
                    label=label,
                )
    for ax, (tag, title) in zip(axes.flat, DIAGNOSTICS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round")
        whole_rounds(ax, [s for runs in by_method.values() for r in runs if tag in r.curves for s in r.curves[tag][0]])
        if tag != "curvature/cosine_to_fo":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Curvature at each client's first meta-step: client mean per diagnosed round (dashed: stopped run)")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def describe(run: Run) -> str:
    c = run.config
    keys = ("num_clients", "fraction", "local_steps", "batch_size", "delta", "num_rounds")  # α, β: in the table
    setting = ", ".join(f"{k}={c[k]}" for k in keys if k in c)
    part = c.get("partition", {}).get("name", "?")
    return f"model={c['model']['name']}, dataset={c['dataset']['name']}, partition={part}, {setting}"


#: runs.csv's columns after method and seed: the step sizes, then the final values (classification or regression).
CSV_KEYS = ("alpha", "beta", "lam", "adapt_steps")


def runs_csv(by_method: dict[str, list[Run]], metrics: list[tuple[str, str]], warnings: dict[Path, int | None]) -> str:
    """One line per run (methods in table order, then seeds): method, seed, α, β, λ (where read), adapt_steps,
    rounds, the final values of ``metrics`` (full precision), the run's directory name and the round of the
    stability monitor's first warning (``warnings``: run directory → round or None, for the runs whose monitor could
    warn, :func:`can_warn`; empty: none; ``–``: a run not in it)."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "seed", *CSV_KEYS, "rounds", *(tag for tag, _ in metrics), "run", "stability_warning"])
    for method in ordered(list(by_method)):
        for run in sorted(by_method[method], key=lambda r: r.seed):
            c = run.config
            lam = c["algorithm"]["lam"] if c["algorithm"]["name"] in READS_LAM else ""
            row = [method, run.seed, c["alpha"], c["beta"], lam, c["adapt_steps"], last_round(run)]
            warned = (warnings[run.path] or "") if run.path in warnings else "–"
            writer.writerow([*row, *(repr(final_value(run, tag)) for tag, _ in metrics), run.path.name, warned])
    return out.getvalue()


def sweep_report(
    sweep_dir: Path, files: Path, prefix: str, heading: str, against: Sequence[str] = ()
) -> tuple[list[str], list[Path], int] | None:
    """The report of one sweep as Markdown lines (plots and CSV written into ``files`` with names starting with
    ``prefix``), the run directories skipped, and how many lines make its summary; None without finished runs."""
    runs, empty = find_runs(sweep_dir)
    stopped = [r for r in runs if not finished(r)]
    runs = [r for r in runs if finished(r)]
    if not runs:
        return None
    metrics = CLASSIFICATION if all(t in runs[0].curves for t, _ in CLASSIFICATION) else REGRESSION
    usable = [r for r in runs if all(t in r.curves for t, _ in metrics)]
    skipped = [r.path for r in runs if r not in usable] + empty
    by_method: dict[str, list[Run]] = defaultdict(list)
    for run in usable:
        by_method[run.method].append(run)
    name = sweep_dir.name if sweep_dir.name != "runs" else f"{sweep_dir.parent.parent.name}/{sweep_dir.parent.name}"
    text = [
        f"{heading} {name}",  # perfedavg-heterogeneity's OUT_DIR/<level>/runs: named by data set and level
        "",
        f"Setting: {describe(usable[0])}.",
        f"Ran on: {hosts(usable)}.",
        "Final values are at each run's last evaluated round; mean ± sample standard deviation over seeds.",
        "",
        table(by_method, metrics),
        "",
    ]
    comparison = paired(by_method, *metrics[1])
    if comparison:
        text += [comparison, ""]
    against_fo = paired(by_method, *metrics[1], baseline=FO)  # the paper's HF ≥ FO, seed by seed
    if against_fo:
        text += [against_fo, ""]
    for baseline in dict.fromkeys(against):  # --against: the methods listed after it, seed by seed
        if baseline in ("FedAvg", FO):  # already shown above
            continue
        more = paired(by_method, *metrics[1], baseline=baseline)
        if more:
            text += [more, ""]
    for tag, title in metrics:
        png = files / f"{prefix}{tag.split('/')[1]}.png"
        plot(by_method, tag, title, png)
        text.append(f"![{title}]({png.name})")
    diagnosed: dict[str, list[Run]] = defaultdict(list)
    for run in usable + stopped:
        if DIAGNOSTICS[0][0] in run.curves:
            diagnosed[run.method].append(run)
    if diagnosed:
        plot_curvature(diagnosed, files / f"{prefix}curvature.png")
        text += ["", "Curvature diagnostics (medians over diagnosed rounds and runs):", "", curvature_table(diagnosed)]
        text += ["", f"![curvature diagnostics]({prefix}curvature.png)"]
        (files / f"{prefix}curvature.csv").write_text(curvature_csv(diagnosed))
        text += ["", f"Per run and diagnosed round: [{prefix}curvature.csv]({prefix}curvature.csv)."]
    csv_file = files / f"{prefix}runs.csv"
    warnings = {r.path: stability_warning(r) for r in usable if can_warn(r)}  # each job log read once
    csv_file.write_text(runs_csv(by_method, metrics, warnings))
    text += ["", f"Per run (seed by seed): [{csv_file.name}]({csv_file.name})."]
    if stopped:
        text += ["", f"Stopped before their last round ({len(stopped)}; not in the table):", ""]
        text += [f"- {r.path.name} ({r.method}, seed {r.seed}): {stop_reason(r)}" for r in stopped]
    collapsed = [(r, at) for r in usable if (at := collapse_of(r)) is not None]
    if collapsed:
        tag, title = metrics[1]
        text += ["", f"Collapsed on the way ({len(collapsed)}; in the table):", ""]
        text += [
            f"- {r.path.name} ({r.method}, seed {r.seed}): training loss beyond {COLLAPSE_FACTOR:g}× round 1's at "
            f"round {at}; final {title} {final_value(r, tag):.4f}"
            for r, at in collapsed
        ]
    text += monitor_summary(by_method, {r.path: at for r, at in collapsed}, warnings)
    if skipped:
        text += ["", f"Skipped {len(skipped)} run(s) without the metrics: " + ", ".join(str(p) for p in skipped)]
    return text, skipped, 9 if comparison else 7


def monitor_summary(
    by_method: dict[str, list[Run]], collapsed: dict[Path, int], warnings: dict[Path, int | None]
) -> list[str]:
    """Per method whose runs' stability monitor could warn (the runs in ``warnings``: run directory → the round of
    its first warning or None): in how many runs it warned, and of the runs that collapsed (run directory → round),
    before how many it warned and how many rounds ahead (what a warning is worth: docs/curvature.md#stability)."""
    lines = []
    for method in ordered(list(by_method)):
        runs = [r for r in by_method[method] if r.path in warnings]
        if not runs:
            continue
        warned = {r.path: w for r in runs if (w := warnings[r.path]) is not None}
        line = f"- {method}: warned in {len(warned)} of {len(runs)} runs"
        fell = [r.path for r in runs if r.path in collapsed]
        if fell:
            ahead = [collapsed[p] - warned[p] for p in fell if p in warned and warned[p] < collapsed[p]]
            line += f"; {len(fell)} collapsed, warned before {len(ahead)} of them"
            line += f" ({', '.join(str(a) for a in ahead)} rounds ahead)" if ahead else ""
        lines.append(line)
    if not lines:
        return []
    head = "Stability monitor (docs/curvature.md#stability; a warning's round per run in the CSV):"
    return ["", head, "", *lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perfedavg-report", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+", help="multirun directories (e.g. from perfedavg-reproduce)")
    parser.add_argument("--out", type=Path, help="also write the report here, its plots and CSV beside it")
    parser.add_argument("--title", default="Sweep reports", help="--out's heading when it holds several sweeps")
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="METHOD",
        help="also compare the methods listed after METHOD with it, seed by seed (e.g. 'FedAvg (fine-tuned)')",
    )
    args = parser.parse_args(argv)
    if len(args.sweep_dirs) > 1 and not args.out:
        print(
            "report: error: several sweep directories need --out (the file that holds their sections)", file=sys.stderr
        )
        return 2
    for sweep_dir in args.sweep_dirs:
        if not sweep_dir.is_dir():
            print(f"report: error: SWEEP_DIR={sweep_dir} is not a directory", file=sys.stderr)
            return 2
    sections = []
    for sweep_dir in args.sweep_dirs:
        made = sweep_report(sweep_dir, sweep_dir, "", "# Sweep report:", args.against)
        if made is None:
            print(f"report: error: no finished runs with TensorBoard event files under {sweep_dir}", file=sys.stderr)
            return 2
        text, skipped, summary = made
        (sweep_dir / "report.md").write_text("\n".join(text) + "\n")
        if not args.out:
            print("\n".join(text[:summary]))
        if skipped:
            print(
                f"report: skipped {len(skipped)} run(s) without their metrics (unfinished or failed)", file=sys.stderr
            )
        print(f"report: wrote {sweep_dir / 'report.md'} and the plots next to it", file=sys.stderr)
        sections.append(sweep_dir)
    if args.out:
        from perfedavg.analysis.results_file import recording

        several = len(sections) > 1
        stem = args.out.stem
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with recording(str(args.out)):
            if several:
                print(f"# {args.title}\n")
            for k, sweep_dir in enumerate(sections):
                prefix = f"{stem}_{k + 1}_" if several else f"{stem}_"
                text, _, _ = sweep_report(
                    sweep_dir, args.out.parent, prefix, "## Sweep:" if several else "# Sweep report:", args.against
                )
                print("\n".join(text) + "\n")
        print(f"report: wrote {args.out} and its plots and CSV beside it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
