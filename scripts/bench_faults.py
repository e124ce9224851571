"""How fast perfedavg gets past the faults of long runs, measured: the time from a stop signal to the process's exit,
the time a hung client holds up its round under ``round_timeout_s``, and what a dead Ray worker costs.

    .venv/bin/python scripts/bench_faults.py [--repeats 3] [--out scripts/results/faults.md]

Each measurement is a fresh ``perfedavg`` process (the default Net on digits, 10 clients all sampled, Ray with one
actor per core unless in-process) with a fault injected by ``perfedavg.testing.faults``; the signal goes to the run's
whole process group, as a terminal's Ctrl-C or a batch scheduler's SIGTERM does. Printed: medians (and ranges) over the
repeats, and whether every repeat stopped cleanly (exit 128 + signal, no traceback, the resume line, no process left).
Takes about 5 minutes with 3 repeats on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perfedavg.testing.faults import signal_mid_run

BASE = ["num_clients=10", "fraction=1.0"]
#: Signal scenarios: (label, backend, signal, faults, overrides).
SIGNALS = [
    ("Ctrl-C (SIGINT), clients busy", "inprocess", signal.SIGINT, [], ["num_rounds=400", "local_steps=20"]),
    ("Ctrl-C (SIGINT), clients busy", "ray", signal.SIGINT, [], ["num_rounds=400", "local_steps=20"]),
    ("SIGTERM, clients busy", "ray", signal.SIGTERM, [], ["num_rounds=400", "local_steps=20"]),
    ("Ctrl-C while client 1 hangs (600 s sleep)", "inprocess", signal.SIGINT, ["stall:1:2:600"], ["num_rounds=5"]),
    ("Ctrl-C while client 1 hangs (600 s sleep)", "ray", signal.SIGINT, ["stall:1:2:600"], ["num_rounds=5"]),
]
TIMEOUT_S = 5
#: Scenarios read from a finished run's metrics: (label, backend, faults, overrides).
ROUNDS = [
    (
        f"client 1 hangs in round 2, round_timeout_s={TIMEOUT_S}",
        "inprocess",
        ["stall:1:2:600"],
        [f"round_timeout_s={TIMEOUT_S}"],
    ),
    (
        f"client 1 hangs in round 2, round_timeout_s={TIMEOUT_S}",
        "ray",
        ["stall:1:2:600"],
        [f"round_timeout_s={TIMEOUT_S}"],
    ),
    ("client 1's worker process dies in round 2", "ray", ["die:1:2"], []),  # round_timeout_s at its default
]


def median_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})" if values else "—"


def measure_signals(repeats: int, work: Path) -> list[str]:
    rows = [
        "| fault | backend | signal → exit, median (range) | exit codes | clean stop |",
        "|---|---|---:|---|---|",
    ]
    for label, backend, signum, faults, overrides in SIGNALS:
        seconds, codes, cleans = [], [], []
        for i in range(repeats):
            run_dir = Path(tempfile.mkdtemp(dir=work)) / "run"
            hung = bool(faults)
            stopped = signal_mid_run(
                [*BASE, *overrides, f"backend={backend}"],
                run_dir,
                signum,
                after_round=1 if hung else 2,
                faults=faults,
                delay_s=2.0 if hung else 0.0,  # round 2 under way: the hung client asleep, the others done
            )
            seconds.append(stopped.seconds)
            codes.append(stopped.code)
            cleans.append(not stopped.problems(signum))
            done = f"exit {stopped.code} after {stopped.seconds:.2f} s"
            print(f"[faults] {label}, {backend}, #{i + 1}: {done}", file=sys.stderr)
        rows.append(
            f"| {label} | {backend} | {median_range(seconds)} | {', '.join(map(str, sorted(set(codes))))} | "
            f"{sum(cleans)}/{repeats} |"
        )
    return rows


def finished_run(backend: str, faults: list[str], overrides: list[str], run_dir: Path) -> list[dict]:
    command = [sys.executable, "-m", "perfedavg.testing.faults", *faults, "--"]
    args = [*BASE, "num_rounds=4", f"backend={backend}", *overrides]
    out = subprocess.run(
        [*command, *args, f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=600,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {out.returncode}: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    return json.loads((run_dir / "metrics.json").read_text())["rounds"]


def measure_rounds(repeats: int, work: Path) -> list[str]:
    rows = [
        "| fault | backend | round 2 training (the fault's), median (range) | rounds 3–4 training "
        "| trained, rounds 1–4 | failed, rounds 1–4 |",
        "|---|---|---:|---:|---|---|",
    ]
    for label, backend, faults, overrides in ROUNDS:
        faulty, after, trained, failed = [], [], set(), set()
        for i in range(repeats):
            rounds = finished_run(backend, faults, overrides, Path(tempfile.mkdtemp(dir=work)) / "run")
            faulty.append(rounds[1]["time/train_s"])
            after += [r["time/train_s"] for r in rounds[2:]]
            trained.add(", ".join(str(int(r["clients/trained"])) for r in rounds))
            failed.add(", ".join(str(int(r["clients/failed"])) for r in rounds))
            print(f"[faults] {label}, {backend}, #{i + 1}: round 2 {faulty[-1]:.2f} s", file=sys.stderr)
        rows.append(
            f"| {label} | {backend} | {median_range(faulty)} | {median_range(after)} | {' / '.join(sorted(trained))} "
            f"| {' / '.join(sorted(failed))} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the tables (markdown) here")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="perfedavg-faults-") as work:
        signals = measure_signals(args.repeats, Path(work))
        rounds = measure_rounds(args.repeats, Path(work))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    text = "\n".join(
        [
            f"`scripts/bench_faults.py --repeats {args.repeats}` at commit `{commit or '?'}`, {os.cpu_count()} CPUs, "
            f"{time.monotonic() - started:.0f} s in all; default Net on digits, {' '.join(BASE)}.",
            "",
            *signals,
            "",
            *rounds,
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
