"""``run(cfg) -> summary``: prepare a composed config (:mod:`perfedavg.config.preparation`), then run the federation on
Flower's simulation engine (Ray) or in-process, holding the run directory (:mod:`perfedavg.run.lock`).
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from perfedavg.config import ConfigError
from perfedavg.config.preparation import (  # re-exported: the API scripts and tests use
    CONF_DIR,
    check_output_dir,
    compose,
    prepare,
)
from perfedavg.federation import stopping
from perfedavg.run import lock as run_lock
from perfedavg.task import available_cpus

log = logging.getLogger("perfedavg")


def quiet_logs(verbose: bool) -> None:
    """Flower's logger has its own handler and also propagates to Hydra's root logger (every line twice):
    stop the propagation, and keep it to errors (a failing client's traceback) unless ``verbose``; likewise
    for the libraries Flower brings along. Flower configures its logger when first imported, so it is imported
    first."""
    import flwr.common.logger  # noqa: F401 - sets the "flwr" logger's handler and level on import

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
    machine), no dashboard, Ray's own logs only when verbose. Without ``ray_address``, ``address="local"`` always
    starts this run's own Ray instance: ``ray.init()`` would otherwise join a cluster found via ``RAY_ADDRESS`` or
    ``ray start``, so simulations started side by side (a parallel sweep) could share, and tear down, each other's
    actors. With ``ray_address`` (``auto`` or ``HOST:PORT``) the run joins that cluster as a driver of its own: the
    cluster's CPUs, GPUs and dashboard are its own business (:func:`join_ray_cluster` connects first)."""
    address = cfg.get("ray_address")
    init_args: dict[str, Any] = (
        {"address": address}
        if address
        else {"address": "local", "include_dashboard": False, "num_cpus": available_cpus()}
    )
    if not cfg["verbose"]:
        init_args.update({"logging_level": logging.ERROR, "log_to_driver": False})
    resources = {"num_cpus": cfg["client_cpus"], "num_gpus": float(cfg["client_gpus"])}
    return {"client_resources": resources, "init_args": init_args}


def start_ray(cfg: dict[str, Any]) -> None:
    """Start this run's local Ray (or join the cluster at ``ray_address``) before Flower's engine would, with the same
    arguments (:func:`backend_config`) and the driver's ``sys.path`` as the workers' ``PYTHONPATH``, as Flower does;
    then take SIGINT/SIGTERM back from Ray (:func:`perfedavg.federation.stopping.take_signals_back`)."""
    import sys

    import ray

    # A SIGTERM sent to the whole process group (``kill -- -PGID``, a batch scheduler) ends Ray's own processes at
    # once; the driver's shutdown then waits for its task-event flush to the gone GCS (5 s by default) for nothing.
    os.environ.setdefault("RAY_task_events_shutdown_flush_timeout_ms", "500")
    if cfg.get("ray_address"):
        join_ray_cluster(cfg)
    else:
        pythonpath = os.pathsep.join(sys.path)
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **backend_config(cfg)["init_args"])
    stopping.take_signals_back()


def join_ray_cluster(cfg: dict[str, Any]) -> None:
    """Connect to the Ray cluster at ``ray_address`` before Flower starts (Flower's engine then uses the connection),
    so that a wrong address is one line naming it, not a traceback from the engine's thread. The connection passes
    the driver's ``sys.path`` as ``PYTHONPATH`` to the cluster's workers, as Flower's own ``ray.init`` does."""
    import sys

    import ray

    address = cfg["ray_address"]
    advice = "start one with `ray start --head` (its address is printed) or leave ray_address unset for a local Ray"
    if address != "auto":  # Ray itself retries an unreachable head for minutes
        host, _, port = address.rpartition(":")
        problem = gcs_answer_problem(host, int(port))
        if problem:
            raise ConfigError(f"ray_address={address}: cannot join a Ray cluster there ({problem}); {advice}")
    init_args = dict(backend_config(cfg)["init_args"])
    pythonpath = os.pathsep.join(sys.path)
    try:
        ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init_args)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError or ValueError here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"ray_address={address}: cannot join a Ray cluster there ({type(e).__name__}: {first}); {advice}"
        ) from None
    cpus = ray.cluster_resources().get("CPU", 0)
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    log.info("joined the Ray cluster at %s: %d node(s), %g CPUs", address, nodes, cpus)


#: The HTTP/2 connection preface and an empty SETTINGS frame: what any gRPC client sends first.
_HTTP2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def gcs_answer_problem(host: str, port: int, timeout: float = 4.0) -> str | None:
    """Why ``host:port`` is not a Ray head's GCS, or ``None`` if it speaks gRPC. A GCS is a gRPC (HTTP/2) server: it
    answers a client's connection preface with its own SETTINGS frame at once. A closed port refuses the connection; a
    host that does not answer, or a listener that never serves (a TCP backlog nobody accepts from), sends nothing
    within ``timeout`` seconds. (Ray itself retries such addresses for minutes.)"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            conn.sendall(_HTTP2_HELLO)
            reply = conn.recv(9)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as e:
        return f"nothing answers: {e.strerror or e}"
    if len(reply) < 9 or reply[3] != 0x04:  # a frame header whose type is SETTINGS
        return "what answers there is not a Ray head (no gRPC)"
    return None


def run(cfg: DictConfig | dict[str, Any], run_dir: Path, client_app: Any = None) -> dict[str, Any]:
    """Validate ``cfg`` and run the federation in simulation; TensorBoard and ``metrics.json`` go to ``run_dir``.

    Returns the summary (``final`` metrics, per-round ``rounds``, ``client_failures``, ``wall_s``); raises
    :class:`~perfedavg.federation.stopping.FederationInterrupted` after SIGINT/SIGTERM. ``client_app`` replaces the
    standard ClientApp (tests wrap it with fault-injecting mods).
    """
    resolved = prepare(cfg) if isinstance(cfg, DictConfig) else cfg
    if resolved.get("resume"):
        run_dir = Path(resolved["resume"])  # a resumed run continues in its own directory and TensorBoard log
    check_output_dir(Path(run_dir))
    quiet_logs(resolved["verbose"])
    try:
        # One run per directory (a second, or a resume of a live run, is refused); SIGINT/SIGTERM stop it cleanly.
        with run_lock.hold(Path(run_dir), within=True), stopping.stop_on_signals():
            return _simulate(resolved, Path(run_dir), client_app)
    except run_lock.RunDirectoryInUse as e:
        raise ConfigError(str(e)) from None


def _simulate(resolved: dict[str, Any], run_dir: Path, client_app: Any) -> dict[str, Any]:
    """The federation of a prepared config on the chosen backend (see :func:`run`)."""
    if resolved.get("backend") == "inprocess":
        from perfedavg import task
        from perfedavg.engines.client_app import app as inprocess_app
        from perfedavg.engines.inprocess_grid import InProcessGrid
        from perfedavg.federation.record import run_and_record

        workers = task.concurrent_clients(resolved)
        grid = InProcessGrid(client_app or inprocess_app, resolved["num_clients"], workers=workers)
        try:
            return run_and_record(grid, resolved, Path(run_dir))
        finally:
            grid.close()
    import ray
    from flwr.simulation import run_simulation

    from perfedavg.engines import sim_engine
    from perfedavg.engines.client_app import app as default_client_app
    from perfedavg.engines.server_app import build_server_app

    sim_engine.install()
    outcome: dict[str, Any] = {}
    server = build_server_app(resolved, Path(run_dir), outcome)
    try:
        with warnings.catch_warnings():
            if not resolved["verbose"]:
                warnings.simplefilter("ignore")
            start_ray(resolved)
            run_simulation(
                server_app=server,
                client_app=client_app or default_client_app,
                num_supernodes=resolved["num_clients"],
                backend_config=backend_config(resolved),
                verbose_logging=resolved["verbose"],
            )
    finally:
        sim_engine.close()
        ray.shutdown()  # Flower's engine shuts Ray down when it ends; this covers a failure before (a cluster stays up)
    if "error" in outcome:
        raise outcome["error"]
    if "summary" not in outcome:
        raise RuntimeError("the simulation ended without a result (see the log above)")
    return outcome["summary"]


__all__ = ["CONF_DIR", "ConfigError", "check_output_dir", "compose", "prepare", "run"]
