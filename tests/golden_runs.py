"""Reference federations whose per-round metrics speed work must not move (issue: "results must not move").

``tests/golden/metrics.json`` holds the per-round metrics (time/* excluded) of each run below, as written by

    .venv/bin/python tests/golden_runs.py --write

from the code *before* a change that must not change results; ``tests/test_golden.py`` runs the same federations
with today's code and compares them. A deliberate change of results (a bug fix) rewrites the file with the same
command and names the change in its commit.

The runs cover the digits default (Net, hvp), the paper's MLP with finite differences and FO, a FedAvg run, and
parquet data sets written here (grey 28×28 through the paper partition, RGB 32×32 through Dirichlet), so the
image decoding path is checked pixel for pixel through the metrics it produces.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

from fake_images import images, write_parquet
from support import without_times

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden" / "metrics.json"

#: As recorded: β and the digits runs' partition are the root config's before the default run changed (Dirichlet,
#: β 0.02), so they are given here.
SMALL = ["backend=inprocess", "num_rounds=3", "local_steps=2", "eval_every=1", "beta=0.1"]
DIGITS = [*SMALL, "partition=pathological"]

#: name → Hydra overrides; ``{grey}`` / ``{rgb}`` are replaced by the parquet directories written by :func:`write_data`.
RUNS: dict[str, list[str]] = {
    "digits_net_hvp": [*DIGITS, "num_clients=10"],
    "digits_mlp_fd": [*DIGITS, "num_clients=10", "model=mlp", "hessian=fd", "batch_size=8"],
    "digits_mlp_fo_weighted": [*DIGITS, "num_clients=8", "model=mlp", "hessian=fo", "aggregation=weighted"],
    "digits_fedavg": [*DIGITS, "num_clients=10", "algorithm=fedavg"],
    "parquet_grey_paper_fd": [
        *SMALL,
        "dataset=mnist",
        "dataset.path={grey}",
        "model=mlp",
        "hessian=fd",
        "partition=paper",
        "partition.images_per_class=6",
        "num_clients=6",
        "batch_size=8",
    ],
    "parquet_rgb_dirichlet_hvp": [
        *SMALL,
        "dataset=cifar10",
        "dataset.path={rgb}",
        "model=net",
        "partition=dirichlet",
        "partition.alpha=1.0",
        "num_clients=4",
        "batch_size=8",
    ],
}


def write_data(root: Path) -> dict[str, str]:
    """Tiny parquet data sets in the hub's layout (deterministic: seeded pixels, lossless PNG)."""
    grey = write_parquet(root / "grey", *images(24, (28, 28), seed=1))
    rgb = write_parquet(root / "rgb", *images(8, (32, 32, 3), seed=2), image_key="img")
    return {"grey": str(grey), "rgb": str(rgb)}


def run_all(root: Path, workers: int = 1) -> dict[str, list[dict[str, float]]]:
    """Per-round metrics (no ``time/*``) of every run in :data:`RUNS`, in-process (``workers`` clients at a time),
    under ``root``."""
    from perfedavg.engines.client_app import app
    from perfedavg.engines.inprocess_grid import InProcessGrid
    from perfedavg.federation.record import run_and_record
    from perfedavg.run.runner import compose, prepare

    paths = write_data(root / "data")
    out = {}
    for name, overrides in RUNS.items():
        cfg = prepare(compose([o.format(**paths) for o in overrides]))
        grid = InProcessGrid(app, cfg["num_clients"], workers=workers)
        try:
            summary = run_and_record(grid, cfg, root / name)
        finally:
            grid.close()
        out[name] = without_times(summary["rounds"])
    return out


def machine() -> dict[str, str]:
    """What bit-identity depends on: the torch build, the CPU model and the vector instructions torch uses."""
    import torch

    return {
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy": __import__("numpy").__version__,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


def main() -> None:
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/golden_runs.py --write")
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HOME"] = str(Path(tmp) / "hf")
        os.environ["PERFEDAVG_CACHE_DIR"] = str(Path(tmp) / "cache")
        metrics = run_all(Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"machine": machine(), "runs": metrics}, indent=1) + "\n")
    print(f"wrote {GOLDEN}: {', '.join(f'{k} ({len(v)} rounds)' for k, v in metrics.items())}")


if __name__ == "__main__":
    main()
