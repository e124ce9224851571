"""What the data and checkpoint checks cost (issue 21): start-up and round time of a real-data run, and the digests.

Run once per code version with the same warm caches, e.g. today's tree against an earlier commit's worktree:

    .venv/bin/python scripts/bench_integrity.py dataset.path=/path/to/mnist            # this checkout
    PYTHONPATH=/tmp/old .venv/bin/python scripts/bench_integrity.py dataset.path=…    # a worktree of another commit

Each repetition is a fresh process (start-up includes the data check, the cache look-up and its verification),
``experiment=paper_mnist backend=inprocess num_rounds=5``; it prints the median start-up (until the first round
starts), the median round time and, for this checkout, the digest of the data files and of the cached arrays.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, logging, sys, tempfile, time
t0 = time.perf_counter()
from pathlib import Path
logging.disable(logging.INFO)
from perfedavg.runner import compose, prepare, run
from perfedavg import federation
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


def main() -> None:
    args = ["experiment=paper_mnist", "backend=inprocess", "num_rounds=5", *sys.argv[1:]]
    subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True)  # warm the caches
    results = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", CHILD, *args], check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    import perfedavg

    print(f"code: {Path(perfedavg.__file__).parent}")
    print(f"start-up (median of 5 processes): {statistics.median(r['startup_s'] for r in results):.2f} s")
    print(f"round (median over rounds 2-5, median of 5): {statistics.median(r['round_s'] for r in results):.3f} s")
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
