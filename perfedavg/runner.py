"""``run(cfg) -> summary``: validate a composed config, then launch the federation on Flower's simulation engine.

Everything a user can get wrong is checked in :func:`prepare`, before Ray starts: types and allowed values (the
schema, at composition), ranges and model/dataset combinations (:func:`perfedavg.config.validate`), whether the
data set can serve ``num_clients`` clients, and whether ``hessian=exact`` fits its memory budget.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from perfedavg import checkpoint, curvature, run_lock, task
from perfedavg.config import ConfigError, register_schema, to_container, validate
from perfedavg.data import check_dataset, data_params

log = logging.getLogger("perfedavg")

#: The conf/ tree (beside the package in the repository; the editable install keeps it there).
CONF_DIR = Path(os.environ.get("PERFEDAVG_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, outside ``@hydra.main`` (tests, ``flwr run``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Validate everything that can be checked without Flower; return the resolved config as plain data."""
    validate(cfg)
    resolved = to_container(cfg)
    if resolved["resume"]:
        check_resumable(resolved)
    check_device(resolved)
    check_dataset(data_params(resolved), resolved["num_clients"], resolved["seed"])
    if resolved["hessian"]["mode"] == "exact":
        model = task.build_model(resolved["model"], resolved["seed"])
        p, clients, budget = curvature.parameter_layout(model).size, task.concurrent_clients(resolved), None
        try:
            budget = task.hessian_budget_gb(resolved)
            curvature.check_hessian_fits(p, torch.float32, budget)
        except curvature.HessianTooLargeError:
            given = resolved["hessian"]["max_memory_gb"]
            total = "half the available memory" if given is None else f"hessian.max_memory_gb = {given:.2f} GB"
            shared = f"; {total} shared among {clients} clients computing at once" if clients > 1 else f"; {total}"
            raise ConfigError(
                f"hessian=exact with model={resolved['model']['name']}: the full Hessian has P = {p:,} parameters "
                f"and needs {curvature.hessian_memory_bytes(p) / 1e9:.2f} GB (float32), above the budget of "
                f"{budget:.2f} GB per client{shared}; use hessian=hvp (exact Hessian-vector products, O(P) memory) "
                f"or raise hessian.max_memory_gb"
            ) from None
    return resolved


def _cuda_absent() -> str:
    import torch

    built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return f"no CUDA GPU is visible to PyTorch (torch {torch.__version__}, {built})"


def check_device(resolved: dict[str, Any]) -> None:
    """``device``, ``client_cpus`` and ``client_gpus`` must be usable here: more CPUs or GPUs per client than the
    machine has (Ray would wait forever to place an actor), CUDA asked for where there is none, or GPUs reserved for
    Ray actors that would not use them (or, under Ray, CUDA without a GPU share: Ray hides GPUs from such actors),
    stop before anything starts."""
    import torch

    device, gpus, ray = resolved["device"], float(resolved["client_gpus"]), resolved["backend"] == "ray"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device=cuda: {_cuda_absent()}; use device=cpu or device=auto")
    if gpus > 0 and not torch.cuda.is_available():
        raise ConfigError(f"client_gpus={gpus:g}: {_cuda_absent()}; use client_gpus=0")
    if gpus > 0 and device == "cpu":
        raise ConfigError(f"client_gpus={gpus:g} with device=cpu: the reserved GPUs would sit idle; use device=auto")
    cpus = os.cpu_count() or 1
    if ray and float(resolved["client_cpus"]) > cpus:
        raise ConfigError(
            f"client_cpus={resolved['client_cpus']:g}: more than the {cpus} CPUs of this machine, so Ray could place "
            f"no client; use client_cpus ≤ {cpus} (e.g. 1)"
        )
    if ray and gpus > torch.cuda.device_count() > 0:
        raise ConfigError(
            f"client_gpus={gpus:g}: more than the {torch.cuda.device_count()} GPU(s) of this machine, so Ray could "
            f"place no client; use a share ≤ {torch.cuda.device_count()} (e.g. 0.5: two clients per GPU)"
        )
    if device == "cuda" and ray and gpus == 0:
        raise ConfigError(
            "device=cuda with backend=ray needs client_gpus > 0 (the share of a GPU each client's Ray actor reserves, "
            "e.g. client_gpus=0.5 for two clients per GPU); Ray hides the GPUs from actors that reserve none"
        )


#: Free space a run needs at least where it writes (logs, event files, one checkpoint at a time).
MIN_FREE_BYTES = 200 * 10**6


def check_output_dir(path: Path) -> None:
    """Fail early and clearly if a run could not write into ``path`` (created later if missing) or the disk is
    nearly full: the nearest existing ancestor must be a writable directory with :data:`MIN_FREE_BYTES` free."""
    import shutil
    import tempfile

    path = Path(path).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"output directory {path}: {existing} is a file, not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".perfedavg-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"output directory {path}: cannot write in {existing} ({e.strerror})") from None
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"output directory {path}: only {free / 1e6:.0f} MB free on its disk; a run needs at least "
            f"{MIN_FREE_BYTES / 1e6:.0f} MB for logs and checkpoints"
        )


def check_resumable(resolved: dict[str, Any]) -> None:
    """``resume=<run dir>`` must name a run with a checkpoint whose config matches in everything that matters."""
    run_dir = Path(resolved["resume"])
    try:
        state = checkpoint.load(run_dir) if run_dir.is_dir() else None
    except checkpoint.CheckpointError as e:
        raise ConfigError(f"resume={resolved['resume']}: {e}") from None
    if state is None:
        raise ConfigError(
            f"resume={resolved['resume']}: no checkpoint there "
            f"(expected {checkpoint.checkpoint_path(run_dir)}, written after every completed round)"
        )
    differences = checkpoint.result_differences(state["config"], resolved)
    if differences:
        raise ConfigError(
            f"resume={resolved['resume']}: the config differs from the checkpointed run in keys that change "
            "results:\n    " + "\n    ".join(differences)
        )
    if resolved["num_rounds"] < state["round"]:
        raise ConfigError(
            f"num_rounds={resolved['num_rounds']}: the run to resume has already completed {state['round']} rounds"
        )


def quiet_logs(verbose: bool) -> None:
    """Flower's logger has its own handler and also propagates to Hydra's root logger (every line twice):
    stop the propagation, and keep it to errors (a failing client's traceback) unless ``verbose``; likewise
    for the libraries Flower brings along."""
    flwr_logger = logging.getLogger("flwr")
    flwr_logger.propagate = False
    flwr_logger.setLevel(logging.DEBUG if verbose else logging.ERROR)
    # Flower's state store imports alembic, whose plugin set-up logs at INFO through Hydra's root handler.
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore", module="flwr")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def backend_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Ray backend settings: ``client_cpus`` per client (Flower's default of 2 leaves no actor on a 2-core
    machine), no dashboard, Ray's own logs only when verbose. ``address="local"`` always starts this run's own
    Ray instance: ``ray.init()`` would otherwise join a cluster found via ``RAY_ADDRESS`` or ``ray start``, so
    simulations started side by side (a parallel sweep) could share, and tear down, each other's actors."""
    init_args: dict[str, Any] = {"address": "local", "include_dashboard": False, "num_cpus": os.cpu_count() or 1}
    if not cfg["verbose"]:
        init_args.update({"logging_level": logging.ERROR, "log_to_driver": False})
    resources = {"num_cpus": cfg["client_cpus"], "num_gpus": float(cfg["client_gpus"])}
    return {"client_resources": resources, "init_args": init_args}


def run(cfg: DictConfig | dict[str, Any], run_dir: Path, client_app: Any = None) -> dict[str, Any]:
    """Validate ``cfg`` and run the federation in simulation; TensorBoard and ``metrics.json`` go to ``run_dir``.

    Returns the summary (``final`` metrics, per-round ``rounds``, ``client_failures``, ``wall_s``).
    ``client_app`` replaces the standard ClientApp (tests wrap it with fault-injecting mods).
    """
    resolved = prepare(cfg) if isinstance(cfg, DictConfig) else cfg
    if resolved.get("resume"):
        run_dir = Path(resolved["resume"])  # a resumed run continues in its own directory and TensorBoard log
    check_output_dir(Path(run_dir))
    quiet_logs(resolved["verbose"])
    try:
        with run_lock.hold(Path(run_dir)):  # one run per directory; a second (or a resume of a live run) is refused
            return _simulate(resolved, Path(run_dir), client_app)
    except run_lock.RunDirectoryInUse as e:
        raise ConfigError(str(e)) from None


def _simulate(resolved: dict[str, Any], run_dir: Path, client_app: Any) -> dict[str, Any]:
    """The federation of a prepared config on the chosen backend (see :func:`run`)."""
    if resolved.get("backend") == "inprocess":
        from perfedavg.client_app import app as inprocess_app
        from perfedavg.inprocess_grid import InProcessGrid
        from perfedavg.server_app import run_and_record

        grid = InProcessGrid(client_app or inprocess_app, resolved["num_clients"])
        return run_and_record(grid, resolved, Path(run_dir))
    from flwr.simulation import run_simulation

    from perfedavg import sim_engine
    from perfedavg.client_app import app as default_client_app
    from perfedavg.server_app import build_server_app

    sim_engine.install()
    results: dict[str, Any] = {}
    server = build_server_app(resolved, Path(run_dir), results.update)
    with warnings.catch_warnings():
        if not resolved["verbose"]:
            warnings.simplefilter("ignore")
        run_simulation(
            server_app=server,
            client_app=client_app or default_client_app,
            num_supernodes=resolved["num_clients"],
            backend_config=backend_config(resolved),
            verbose_logging=resolved["verbose"],
        )
    if not results:
        raise RuntimeError("the simulation ended without a result (see the log above)")
    return results


__all__ = ["CONF_DIR", "ConfigError", "compose", "prepare", "run"]
