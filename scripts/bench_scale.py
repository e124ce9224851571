#!/usr/bin/env python
"""What a federation's size costs when the sampled clients stay the same: start-up, round time, evaluation time
and the driver's peak memory at growing ``num_clients``, on both backends. Prints a Markdown table.

    .venv/bin/python scripts/bench_scale.py                                  # 50, 500, 5,000, 50,000 clients
    .venv/bin/python scripts/bench_scale.py --sizes 50,5000 --backends inprocess --rounds 3
    .venv/bin/python scripts/bench_scale.py --out scripts/results/scale.md  # also the table and a plot there

Every run samples the same number of clients per round for training and for evaluation (``--sampled``, default
50: ``fraction`` and ``eval_fraction`` are set to sampled / size), on the paper's MLP and FedProx's synthetic data
(generated per client, so any size exists; ``--overrides`` replaces the setting). Each (size, backend) is one fresh
``perfedavg`` process. Definitions: *start-up* is from the process's start to its first round's start (imports,
data checks, Ray and its actors, node discovery); *round* is the median ``time/round_s`` of rounds 2..R; *eval* the
median ``time/eval_s`` of the same rounds; *client work* the median of ``time/train_compute_total_s``, the training
handlers' own time summed over the round's clients (data loading included: in a large federation nearly every sampled
client is new in every round and its data is generated or loaded on first use, a cost of the data, not of the
federation's size; in a 50-client one every client is cached after round 1), so in-process *round − client work* is
what the orchestration costs; *peak memory* the driver process's peak resident set (``ru_maxrss``; Ray's workers
are other processes and not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SETTING = ["model=mlp", "dataset=synthetic", "partition=natural", "local_steps=10", "batch_size=40"]

#: Runs the CLI in a child process and reports its own peak memory on the way out (also when the run fails).
RUNNER = """
import resource, sys
from perfedavg.cli import main as cli
sys.argv = ["perfedavg", *sys.argv[1:]]
try:
    cli.main()
finally:
    print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr, flush=True)
"""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure(size: int, backend: str, args: argparse.Namespace, root: Path) -> dict[str, float | str]:
    run_dir = root / f"{backend}-{size}"
    share = min(1.0, args.sampled / size)
    overrides = [
        *(args.overrides or DEFAULT_SETTING),
        f"num_clients={size}",
        f"fraction={share!r}",
        f"eval_fraction={share!r}",
        f"num_rounds={args.rounds}",
        f"backend={backend}",
        f"hydra.run.dir={run_dir}",
    ]
    started = time.time()
    # cwd: the checkout this script is in, so that the child (``python -c``, whose sys.path starts with its working
    # directory) measures this checkout's perfedavg, not one that happens to be in the caller's directory
    done = subprocess.run([sys.executable, "-c", RUNNER, *overrides], capture_output=True, text=True, cwd=ROOT)
    wall = time.time() - started
    peak = [ln.split()[1] for ln in done.stderr.splitlines() if ln.startswith("PEAK_RSS_KB")]
    if done.returncode != 0 or not (run_dir / "metrics.json").exists():
        why = [ln for ln in done.stderr.splitlines() if "error" in ln.lower()][-1:] or [f"exit {done.returncode}"]
        return {"size": size, "backend": backend, "failed": why[0][:200]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    later = metrics["rounds"][1:] or metrics["rounds"]
    return {
        "size": size,
        "backend": backend,
        "wall_s": wall,
        "startup_s": metrics["timeline"]["first_round_start"] - started,
        "round_s": statistics.median(r["time/round_s"] for r in later),
        "eval_s": statistics.median(r.get("time/eval_s", 0.0) for r in later),
        "work_s": statistics.median(r.get("time/train_compute_total_s", float("nan")) for r in later),
        "peak_mb": int(peak[-1]) / 1024 if peak else float("nan"),
        "trained": metrics["rounds"][-1]["clients/trained"],
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| clients | backend | sampled per round | start-up (s) | round (s) | client work (s, summed) | eval (s) "
        "| driver peak memory (MB) | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['size']:,} | {r['backend']} | failed: {r['failed']} | | | | | | |")
            continue
        lines.append(
            f"| {r['size']:,} | {r['backend']} | {r['trained']:.0f} | {r['startup_s']:.1f} | {r['round_s']:.2f} | "
            f"{r['work_s']:.2f} | {r['eval_s']:.2f} | {r['peak_mb']:.0f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def against_smallest(rows: list[dict]) -> str:
    """Per backend, each size against the smallest one measured: the targets of a size-independent federation
    (start-up ≤ 15 s more, round within 10 %, driver memory ≤ 1.5×), met or by how much not, and the parts of the
    round: the clients' own work and the rest (in-process, where clients run one after another, the rest is what
    the orchestration costs)."""
    lines = [
        "| backend | clients | start-up: more than the smallest (≤ 15 s) | round: × the smallest (≤ 1.10) "
        "| clients' work: × the smallest | round − clients' work (s) | memory: × the smallest (≤ 1.5) |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend in sorted({r["backend"] for r in rows}):
        ok = sorted((r for r in rows if r["backend"] == backend and "failed" not in r), key=lambda r: r["size"])
        if len(ok) < 2:
            continue
        base = ok[0]

        def rest(r: dict) -> str:  # under Ray the clients run in parallel actors: their summed work overlaps
            return f"{r['round_s'] - r['work_s']:.2f}" if r["backend"] == "inprocess" else "–"

        for r in ok[1:]:
            startup = r["startup_s"] - base["startup_s"]
            ratio, work, memory = (
                r["round_s"] / base["round_s"],
                r["work_s"] / base["work_s"],
                r["peak_mb"] / base["peak_mb"],
            )
            mark = lambda good: "" if good else " (not met)"  # noqa: E731
            lines.append(
                f"| {backend} | {r['size']:,} vs {base['size']:,} | {startup:+.1f} s{mark(startup <= 15)} | "
                f"{ratio:.2f}{mark(ratio <= 1.10)} | {work:.2f} | {rest(r)} vs {rest(base)} | "
                f"{memory:.2f}{mark(memory <= 1.5)} |"
            )
    return "\n".join(lines)


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=120)
    for backend in sorted({r["backend"] for r in rows}):
        ok = [r for r in rows if r["backend"] == backend and "failed" not in r]
        sizes = [r["size"] for r in ok]
        for ax, key in zip(axes, ("startup_s", "round_s", "peak_mb"), strict=True):
            (line,) = ax.plot(sizes, [r[key] for r in ok], marker="o", label=backend)
        axes[1].plot(sizes, [r["work_s"] for r in ok], marker="x", linestyle="--", color=line.get_color(),
                     label=f"{backend}: the clients' own work (summed)")  # fmt: skip
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.set_ylim(bottom=0)
    for ax, title in zip(axes, ("start-up (s)", "round time (s)", "driver peak memory (MB)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("clients in the federation (same number sampled)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,500,5000,50000", help="comma-separated num_clients values")
    parser.add_argument("--backends", default="inprocess,ray", help="comma-separated: inprocess, ray")
    parser.add_argument("--sampled", type=int, default=50, help="clients sampled per round (train and eval)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run (the first is left out of medians)")
    parser.add_argument("--out", type=Path, help="also write the table (and OUT's .png plot) here")
    parser.add_argument("overrides", nargs="*", help="the setting, as Hydra overrides (default: the paper's MLP on "
                        "FedProx's synthetic data)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"bench_scale: error: --sizes={args.sizes}: expected integers separated by commas", file=sys.stderr)
        return 2
    backends = args.backends.split(",")
    if not set(backends) <= {"inprocess", "ray"} or min(sizes) < 1:
        print("bench_scale: error: --backends takes inprocess and/or ray; --sizes positive integers", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            for size in sizes:
                print(f"[bench_scale] {backend}, {size:,} clients …", file=sys.stderr, flush=True)
                rows.append(measure(size, backend, args, Path(tmp)))
    import torch

    machine = f"{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
    text = "\n".join(
        [
            f"Setting: `{' '.join(args.overrides or DEFAULT_SETTING)}`, {args.sampled} clients sampled per round for "
            f"training and for evaluation, {args.rounds} rounds; medians over rounds 2..{args.rounds}.",
            f"Machine: {machine}. Command: `python scripts/bench_scale.py {' '.join(argv or sys.argv[1:])}`.",
            "",
            table(rows),
            "",
            "Against the smallest federation of each backend (the targets in brackets). A round's clients' work "
            "includes their data: in a large federation nearly every sampled client is new each round and builds "
            "its data on first use, which a 50-client federation does only in round 1.",
            "",
            against_smallest(rows),
        ]
    )
    print(text)
    if args.out:
        from perfedavg.analysis.results_file import provenance

        body = f"# Cost against federation size\n\n{text}\n\n![cost against size]({args.out.stem}.png)\n"
        args.out.write_text(provenance() + body)
        plot(rows, args.out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
