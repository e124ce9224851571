"""What the data and checkpoint checks cost: start-up and round time of a real-data run, and the digests.

    .venv/bin/python scripts/bench_integrity.py dataset.path=/path/to/mnist
    .venv/bin/python scripts/bench_integrity.py --against /tmp/old dataset.path=/path/to/mnist

Each repetition is a fresh process (start-up includes the data check, the cache look-up and its verification),
``experiment=paper_mnist backend=inprocess num_rounds=5``, with warm caches. With ``--against DIR`` (a worktree of an
earlier commit, e.g. ``git worktree add /tmp/old <commit>``) the two code versions run alternately, each with a
decoded-data cache of its own, so that the machine's noise falls on both alike; it prints the medians and their
differences. Finally the cost of the digests alone on this machine: the data files and the cached arrays.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Fresh processes per code version.
REPEATS = 9

CHILD = r"""
import json, logging, statistics, sys, tempfile, time
t0 = time.perf_counter()
from pathlib import Path
logging.disable(logging.INFO)
from perfedavg.run.runner import compose, prepare, run
from perfedavg.federation import loop as federation
first = {}
original = federation.Federation.train_round
def timed(self, server_round, weights):
    first.setdefault("t", time.perf_counter())
    return original(self, server_round, weights)
federation.Federation.train_round = timed
with tempfile.TemporaryDirectory() as d:
    summary = run(compose(sys.argv[1:]), Path(d))
rounds = [r["time/round_s"] for r in summary["rounds"]]
print(json.dumps({"startup_s": first["t"] - t0, "round_s": statistics.median(rounds[1:])}))
"""


def measure(args: list[str], env: dict[str, str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"the run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    argv = sys.argv[1:]
    against = None
    if argv[:1] == ["--against"]:
        against, argv = argv[1], argv[2:]
    args = ["experiment=paper_mnist", "backend=inprocess", "num_rounds=5", *argv]
    here = str(Path(__file__).resolve().parent.parent)
    versions = {"this checkout": here, **({f"against {against}": against} if against else {})}
    envs = {
        name: {**os.environ, "PYTHONPATH": root, "PERFEDAVG_CACHE_DIR": str(Path(tempfile.gettempdir()) / f"bench-{i}")}
        for i, (name, root) in enumerate(versions.items())
    }
    for env in envs.values():
        measure(args, env)  # warm the caches
    results: dict[str, list[dict[str, float]]] = {name: [] for name in versions}
    for _ in range(REPEATS):
        for name, env in envs.items():
            results[name].append(measure(args, env))
    print(f"{' '.join(args)}; {REPEATS} processes each, alternating")
    medians = {}
    for name, rows in results.items():
        medians[name] = {k: statistics.median(r[k] for r in rows) for k in ("startup_s", "round_s")}
        print(f"{name}: start-up {medians[name]['startup_s']:.2f} s, round {medians[name]['round_s']:.3f} s (medians)")
    if against:
        a, b = medians["this checkout"], medians[f"against {against}"]
        print(
            f"difference: start-up {a['startup_s'] - b['startup_s']:+.2f} s, round {a['round_s'] - b['round_s']:+.3f} s"
        )
    os.environ["PERFEDAVG_CACHE_DIR"] = envs["this checkout"]["PERFEDAVG_CACHE_DIR"]
    try:
        from perfedavg.data import array_cache, integrity
    except ImportError:
        return
    path = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("dataset.path=")), None)
    if path:
        files = [p for p in Path(path).rglob("*") if p.is_file()]
        start = time.perf_counter()
        integrity.files_digest(path, files)
        size = sum(p.stat().st_size for p in files) / 1e6
        print(f"contents digest of {path}: {size:.0f} MB in {time.perf_counter() - start:.3f} s")
    for entry in sorted(array_cache.cache_root().glob("*-train-*")):
        files = list(entry.glob("*.npy"))
        start = time.perf_counter()
        for f in files:
            integrity.file_digest(f)
        size = sum(p.stat().st_size for p in files) / 1e6
        print(f"checksums of {entry.name}: {size:.0f} MB in {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
