"""What the results tests share: the per-seed CSVs that ``perfedavg-report`` writes (scripts/results/*_runs.csv), the
paired figures computed from them, and a check that a figure as the docs print it (rounded to the digits shown, with
or without its interval, p and seeds ahead) is the CSV's."""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

from perfedavg.analysis.report import DIAGNOSTICS, paired_t

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "scripts" / "results"


def finals(*names: str, tag: str = "eval/personalized_acc") -> dict[str, dict[int, float]]:
    """method → seed → final personalized test accuracy (or another column, ``tag``), over one or more CSVs of
    scripts/results (a method in two of them must agree seed by seed: the same runs reported twice)."""
    out: dict[str, dict[int, float]] = {}
    for name in names:
        with (RESULTS / name).open() as f:
            for row in csv.DictReader(f):
                seeds = out.setdefault(row["method"], {})
                value = float(row[tag])
                assert seeds.setdefault(int(row["seed"]), value) == value, (name, row["method"], row["seed"])
    return out


def mean_sd(values: dict[int, float]) -> str:
    """``0.9679 ± 0.0020``: mean ± sample standard deviation over the seeds."""
    return f"{statistics.mean(values.values()):.4f} ± {statistics.stdev(values.values()):.4f}"


def differences(runs: dict[str, dict[int, float]], method: str, baseline: str) -> list[float]:
    """``method`` − ``baseline`` on the seeds both have."""
    return [runs[method][s] - runs[baseline][s] for s in sorted(runs[baseline]) if s in runs[method]]


def first_hvp_pair_failures() -> tuple[int, int, int]:
    """MNIST's paper split, HF (hvp) at the first tuning's α = 0.144, β = 0.134: the seeds lost (stopped, or ended
    below 0.5 where the others end above 0.98) on the three hosts that ran it — the earlier AMD EPYC's ten-seed report
    (its per-seed values were never committed: the stopped runs it lists, of 10), the later AMD EPYC's baselines sweep
    (of 5) and the Intel Xeon's re-run (of 10)."""
    hvp = "Per-FedAvg (HF, hvp)"
    ten = (RESULTS / "paper_mnist_tuned_fo_hvp_10seeds.md").read_text()
    earlier = len(re.findall(r"- perfedavg-hvp-seed\d+ \(Per-FedAvg \(HF, hvp\), seed \d+\): last logged round", ten))
    later = sum(v < 0.5 for v in finals("baselines_1_runs.csv")[hvp].values())
    intel = finals("paper_mnist_tuned_rerun_1_runs.csv", "paper_mnist_tuned_rerun_2_runs.csv")[hvp]
    return earlier, later, 10 - sum(v >= 0.5 for v in intel.values())


def unsigned(text: str) -> str:
    """The docs' typography made plain: − → -, no bold, one space between words."""
    return " ".join(text.replace("−", "-").replace("**", "").split())


def check_paired(cell: str, diffs: list[float]) -> None:
    """``cell`` (e.g. ``+0.0019 [-0.0016, +0.0053], p = 0.21, 4/5`` or ``-0.010, 0/5``) states ``diffs``: its mean at
    the decimals shown, and where the cell has them its 95 % interval, its p (to the digits shown) and seeds ahead."""
    cell = unsigned(cell)
    shown = re.match(r"([+-]\d+\.(\d+))", cell)
    assert shown, f"no signed figure leads {cell!r}"
    digits = len(shown.group(2))
    assert shown.group(1) == f"{statistics.mean(diffs):+.{digits}f}", (cell, statistics.mean(diffs))
    shown_interval = re.search(r"\[([+-]\d+\.(\d+)), ([+-]\d+\.\d+)\]", cell)
    p_shown = re.search(r"p = ([0-9.e-]+)", cell)
    if shown_interval or p_shown:
        test = paired_t(diffs)
        assert test is not None, f"{cell!r} states an interval or p for differences without spread: {diffs}"
        low, high, p = test
    if shown_interval:  # at the digits shown: [+0.016, +0.096] or [+0.0160, +0.0959]
        places = len(shown_interval.group(2))
        assert shown_interval.group(1, 3) == (f"{low:+.{places}f}", f"{high:+.{places}f}"), (cell, low, high)
    if p_shown:  # to the digits shown
        decimals = len(p_shown.group(1).split(".")[1]) if "." in p_shown.group(1) else 0
        assert abs(float(p_shown.group(1)) - p) <= 0.5 * 10**-decimals + 1e-12, (cell, p)
    ahead = re.search(r"(\d+)/(\d+)", cell)
    if ahead:
        assert (int(ahead.group(1)), int(ahead.group(2))) == (sum(d > 0 for d in diffs), len(diffs)), cell


def collapsed(report: str, sweep: str) -> list[tuple[str, int, int, str]]:
    """(method, seed, round, final) of each run that ``perfedavg-report``'s ``report`` (a file of scripts/results)
    lists under "Collapsed on the way" in its section for ``sweep``."""
    part = (RESULTS / report).read_text().split(f"## Sweep: {sweep}\n", 1)[1].split("\n## Sweep:", 1)[0]
    pattern = r"- \S+ \((.+?), seed (\d+)\): training loss beyond 100× round 1's at round (\d+); final \S+ \S+ (\S+)"
    return [(m, int(s), int(r), final) for m, s, r, final in re.findall(pattern, part)]


def table_after(text: str, marker: str) -> list[dict[str, str]]:
    """The first Markdown table after ``marker`` in ``text``, as rows of header → cell."""
    lines = text.split(marker, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip().strip("|").split("|")])
    header, rows = block[0], block[2:]
    return [dict(zip(header, row)) for row in rows]


def curvature_medians(path: Path) -> dict[str, list[str]]:
    """method → its row of ``perfedavg-report``'s curvature table (runs, diagnosed rounds, the four diagnostics'
    medians, α·λ_max median / max, to three significant digits) recomputed from the report's per-round CSV
    (``*_curvature.csv``) with the standard library alone: the medians over every diagnosed round of every run,
    rounds without a value left out."""
    rows: dict[str, list[dict[str, str]]] = {}
    with path.open() as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["method"], []).append(row)
    tags = [tag for tag, _ in DIAGNOSTICS]  # the tags only: the medians are computed here, not by the report
    out = {}
    for method, found in rows.items():
        per_run: dict[str, int] = {}
        for row in found:
            per_run[row["run"]] = per_run.get(row["run"], 0) + 1
        cells = [str(len(per_run)), "/".join(str(n) for n in sorted(set(per_run.values())))]
        for tag in tags:
            values = [float(r[tag]) for r in found if r[tag] != "nan"]
            cells.append(f"{statistics.median(values):.3g}" if values else "—")
        scaled = [float(r["alpha"]) * float(r[tags[3]]) for r in found if r[tags[3]] != "nan"]
        cells.append(f"{statistics.median(scaled):.3g} / {max(scaled):.3g}" if scaled else "—")
        out[method] = cells
    return out
