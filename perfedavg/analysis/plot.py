"""One picture of one run: global against personalized accuracy (or loss) per round, and the training loss.

    perfedavg-plot RUN_DIR [OUT.png]

Reads ``RUN_DIR/metrics.json`` (written by every run) and writes ``OUT.png`` (default ``RUN_DIR/run.png``): the left
panel shows what Per-FedAvg is for, the global model before and the personalized model after one step of
adaptation on each client's own data; the right panel the clients' mean training loss. The README's picture of the
default run is made with ``bash scripts/run.sh hydra.run.dir=RUN_DIR`` followed by
``perfedavg-plot RUN_DIR docs/img/default_run.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perfedavg-plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (with metrics.json)")
    parser.add_argument("out", type=Path, nargs="?", help="the PNG to write (default: RUN_DIR/run.png)")
    args = parser.parse_args(argv)
    metrics_file = args.run_dir / "metrics.json"
    if not metrics_file.is_file():
        print(f"perfedavg-plot: error: {metrics_file} does not exist (not a finished run directory)", file=sys.stderr)
        return 2
    rounds = json.loads(metrics_file.read_text())["rounds"]
    kind = "acc" if any("eval/global_acc" in r for r in rounds) else "loss"
    evaluated = [r for r in rounds if f"eval/global_{kind}" in r]
    if not evaluated:
        print(f"perfedavg-plot: error: {metrics_file} has no evaluated round", file=sys.stderr)
        return 2

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=120)
    steps = [r["round"] for r in evaluated]
    name = "accuracy" if kind == "acc" else "loss"
    left.plot(steps, [r[f"eval/global_{kind}"] for r in evaluated], marker=".", label="global model")
    personalized = [r[f"eval/personalized_{kind}"] for r in evaluated]
    left.plot(steps, personalized, marker=".", label="personalized (one step on the client's data)")
    left.set_title(f"test {name}, mean over the evaluated clients", fontsize=10)
    left.legend(fontsize=8)
    trained = [r for r in rounds if "train/loss" in r]
    right.plot([r["round"] for r in trained], [r["train/loss"] for r in trained], color="tab:gray", marker=".")
    right.set_title("train/loss (clients' mean)", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out = args.out or args.run_dir / "run.png"
    fig.savefig(out)
    plt.close(fig)
    print(f"perfedavg-plot: wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
