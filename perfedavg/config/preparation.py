"""Compose a run's config and check everything a user can get wrong, before anything starts (no Flower here).

:func:`compose` builds the config from ``conf/`` and Hydra overrides; :func:`prepare` checks it: types and allowed
values (the schema, at composition), ranges and model/dataset combinations (:func:`perfedavg.config.validate`),
whether the data set can serve ``num_clients`` clients, whether ``hessian=exact`` fits its memory budget, the
device and resources, and a ``resume=`` target. Shared by the CLI (:mod:`perfedavg.run.runner`) and ``flwr run``
(:mod:`perfedavg.engines.server_app`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from perfedavg.config import (
    GROUPS,
    ConfigError,
    check_overrides,
    needs_hydra_runtime,
    register_schema,
    sweep_values,
    to_container,
    validate,
)

# PyTorch, the data layer and the checkpoint format are imported inside the checks that need them: composing and
# the config's own checks (types, ranges, keys) then cost about half a second, so a mistake on the command line is
# named at once instead of after PyTorch's import (5 s and more on a small machine).


def _conf_dir() -> Path:
    """Where the Hydra configs are: ``$PERFEDAVG_CONF_DIR``, else the copy a wheel ships inside the package
    (``perfedavg/conf``, built from the top-level ``conf/``), else the checkout's ``conf/`` beside the package (a
    source tree or an editable install, where ``conf/`` is the one copy a user edits)."""
    if "PERFEDAVG_CONF_DIR" in os.environ:
        return Path(os.environ["PERFEDAVG_CONF_DIR"]).expanduser()
    package = Path(__file__).resolve().parents[1]  # perfedavg/
    shipped = package / "conf"
    return shipped if (shipped / "config.yaml").is_file() else package.parent / "conf"


#: The conf/ tree every composition reads (see :func:`_conf_dir`).
CONF_DIR = _conf_dir()


def check_conf_dir() -> None:
    """``$PERFEDAVG_CONF_DIR``, if set, must hold a config tree (``config.yaml``): one line naming it otherwise."""
    if "PERFEDAVG_CONF_DIR" in os.environ and not (CONF_DIR / "config.yaml").is_file():
        raise ConfigError(
            f"PERFEDAVG_CONF_DIR={os.environ['PERFEDAVG_CONF_DIR']}: no config.yaml there; point it at a copy of "
            f"perfedavg's conf/ tree, or unset it to use the shipped configs"
        )


def compose(overrides: list[str] | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with Hydra overrides, outside ``@hydra.main`` (tests, ``flwr run``)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schema()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return hydra_compose(config_name="config", overrides=list(overrides or []))


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Validate everything that can be checked without Flower; return the resolved config as plain data."""
    import torch

    from perfedavg import algorithms, curvature, task
    from perfedavg.data import check_dataset, data_fingerprint, data_params

    validate(cfg)
    resolved = to_container(cfg)
    check_environment()
    check_device(resolved)
    check_dataset(data_params(resolved), resolved["num_clients"], resolved["seed"])
    resolved["data_fingerprint"] = data_fingerprint(data_params(resolved))
    if resolved["resume"]:
        check_resumable(resolved)
    check_client_states_fit(resolved)
    if resolved["hessian"]["mode"] == "exact" and algorithms.declaration_of(resolved["algorithm"]["name"]).uses_hessian:
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


#: Copies of a stateful algorithm's per-client state a simulation holds: the nodes' ``Context.state`` (kept by the
#: engine in this process) and the server's (for checkpoints).
STATE_COPIES = 2


def check_client_states_fit(resolved: dict[str, Any]) -> None:
    """A stateful algorithm (Ditto) keeps one model per client, :data:`STATE_COPIES` times over: refuse a run whose
    states would take more than half the available memory, before it starts. Cost: building the model once."""
    from perfedavg import algorithms, curvature, task

    name = resolved["algorithm"]["name"]
    if not algorithms.get(name).stateful:
        return
    p = curvature.parameter_layout(task.build_model(resolved["model"], resolved["seed"])).size
    need = STATE_COPIES * resolved["num_clients"] * 4 * p
    budget = curvature.available_memory_bytes() / 2
    if need > budget:
        raise ConfigError(
            f"algorithm={name} keeps a personal model per client: num_clients={resolved['num_clients']} × "
            f"P = {p:,} parameters × 4 bytes × {STATE_COPIES} copies (the nodes' Context.state and the server's, for "
            f"checkpoints) = {need / 1e6:,.1f} MB, above half the available memory ({budget / 1e6:,.1f} MB); use "
            f"fewer clients or a smaller model"
        )


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

    from perfedavg import task

    device, gpus, ray = resolved["device"], float(resolved["client_gpus"]), resolved["backend"] == "ray"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device=cuda: {_cuda_absent()}; use device=cpu or device=auto")
    if gpus > 0 and not torch.cuda.is_available():
        raise ConfigError(f"client_gpus={gpus:g}: {_cuda_absent()}; use client_gpus=0")
    if gpus > 0 and device == "cpu":
        raise ConfigError(f"client_gpus={gpus:g} with device=cpu: the reserved GPUs would sit idle; use device=auto")
    cpus = task.available_cpus()
    if ray and not resolved.get("ray_address") and float(resolved["client_cpus"]) > cpus:  # a cluster's nodes differ
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


def load_checkpoint(run_dir: Path, setting: str) -> dict[str, Any] | None:
    """:func:`perfedavg.checkpoint.load`, with a checkpoint that cannot be used reported as a :class:`ConfigError`
    naming the ``setting`` that asked for it (e.g. ``resume=<dir>``)."""
    from perfedavg import checkpoint

    try:
        return checkpoint.load(run_dir) if Path(run_dir).is_dir() else None
    except checkpoint.CheckpointError as e:
        raise ConfigError(f"{setting}: {e}") from None


def check_resumable(resolved: dict[str, Any]) -> None:
    """``resume=<run dir>`` must name a run with a checkpoint whose config matches in everything that matters."""
    from perfedavg import checkpoint
    from perfedavg.config import resume

    run_dir = Path(resolved["resume"])
    state = load_checkpoint(run_dir, f"resume={resolved['resume']}")
    if state is None:
        raise ConfigError(
            f"resume={resolved['resume']}: no checkpoint there "
            f"(expected {checkpoint.checkpoint_path(run_dir)}, written after every completed round)"
        )
    differences = resume.result_differences(state["config"], resolved)
    if differences:
        raise ConfigError(
            f"resume={resolved['resume']}: the config differs from the checkpointed run in keys that change "
            "results:\n    " + "\n    ".join(differences)
        )
    saved = state["config"].get("data_fingerprint")  # absent in checkpoints from before it was recorded
    current = resolved.get("data_fingerprint")  # absent before the data is looked at (resume=auto's first check)
    if saved is not None and current is not None and saved != current:
        what = f"dataset.path={resolved['dataset']['path']}" if resolved["dataset"].get("path") else "the data set"
        raise ConfigError(
            f"resume={resolved['resume']}: the data changed since the checkpoint of round {state['round']}: {what} "
            f"now has contents {current[:12]}…, the run was trained on {saved[:12]}…; restore that data to continue, "
            f"or start a fresh run on the new data"
        )
    if resolved["num_rounds"] < state["round"]:
        raise ConfigError(
            f"num_rounds={resolved['num_rounds']}: the run to resume has already completed {state['round']} rounds"
        )


def check_environment() -> None:
    """The environment variables perfedavg reads, checked like config keys: ``PERFEDAVG_CLIENT_CACHE_GB`` a number
    ≥ 0, ``PERFEDAVG_CACHE_DIR`` a directory (or creatable)."""
    from perfedavg.data import array_cache, client_cache

    try:
        client_cache.bound_bytes()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    raw = os.environ.get(array_cache.CACHE_DIR_VARIABLE)
    if raw:
        path = Path(raw).expanduser()
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ConfigError(
                f"{array_cache.CACHE_DIR_VARIABLE}={raw}: {existing} is not a directory; set it to a directory for "
                f"the decoded-data cache (or unset it: ~/.cache/perfedavg)"
            )


def composition_error(e: Exception) -> str:
    """Hydra's and OmegaConf's composition errors in one line: the failing override and the reason."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    cause = e.__cause__ or e.__context__
    reason = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    return f"{first.removeprefix('Error merging override ')}: {reason}" if reason else first


def check_composes(argv: list[str]) -> DictConfig:
    """Compose the config before Hydra runs, so that a wrong type (``alpha=abc``), an enum value outside the schema
    or a key a run would not read (``dataset.path=…`` with a generated data set) stops with one line and exit 2.
    Returns the composition of ``argv``'s overrides, each sweep at its first value.

    A sweep (``hessian=fo,fd``) is composed once per value, the other sweeps at their first value; values Hydra
    cannot list (Optuna's ``interval(…)``) are left to Hydra. Keys that no run reads are refused only when no group
    choice is swept (in a sweep over groups some run may read them)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from perfedavg.config import ineffective_overrides

    given = [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except HydraException as e:
        raise ConfigError(composition_error(e)) from None
    base: list[str] = []
    variants: list[tuple[int, str]] = []
    for i, override in enumerate(parsed):
        key = override.get_key_element()
        if not override.is_sweep_override():
            base.append(override.input_line)
            continue
        values = [f"{key}={v}" for v in sweep_values(override) or []]  # none listed (interval): its sweeper checks
        base.append(values[0] if values else "")
        variants += [(i, v) for v in values[1:]]
    swept_choice = any(p.is_sweep_override() and p.key_or_group.split(".")[0] in GROUPS for p in parsed)
    first: DictConfig | None = None
    checked_data: set[str] = set()
    for i, value in [(-1, ""), *variants]:
        overrides = [value if j == i else o for j, o in enumerate(base) if (value if j == i else o)]
        try:
            cfg = compose(overrides)
        except (HydraException, OmegaConfBaseException, AssertionError) as e:
            tuned = [o for o in overrides if o.startswith("step_sizes.")]
            if tuned and not isinstance(e, HydraException):  # OmegaConf cannot set a key below an unset table
                raise ConfigError(
                    f"{tuned[0]}: this config has no step_sizes table (a tuned experiment has one, e.g. "
                    f"experiment=paper_mnist_tuned); without one, set alpha= and beta= directly"
                ) from None
            raise ConfigError(composition_error(e)) from None
        problems = [] if swept_choice else ineffective_overrides(cfg, overrides)
        if problems:
            raise ConfigError("; ".join(problems))
        if variants:  # a sweep: every job's ranges and data are checked before the first job starts
            _check_sweep_job(cfg, overrides, checked_data)
        if first is None:  # the base composition (i = -1) comes first
            first = cfg
    assert first is not None
    return first


def _check_sweep_job(cfg: DictConfig, overrides: list[str], checked_data: set[str]) -> None:
    """One sweep job's ranges (:func:`perfedavg.config.validate`) and, once per distinct data setting, whether the data
    can serve its clients; an error names the job's overrides."""
    import json

    from perfedavg.data import DataError, check_dataset, data_params

    job = " ".join(o for o in overrides if o)
    if needs_hydra_runtime(cfg):
        return  # it resolves only inside its job, which checks it
    try:
        validate(cfg)
        resolved = to_container(cfg)
        data = json.dumps([data_params(resolved), resolved["num_clients"], resolved["seed"]], sort_keys=True)
        if data not in checked_data:
            check_dataset(data_params(resolved), resolved["num_clients"], resolved["seed"])
            checked_data.add(data)
    except (ConfigError, DataError) as e:
        raise ConfigError(f"in the sweep's job {job}: {e}") from None


def prepare_overrides(overrides: list[str], machine_checks: bool = True) -> dict[str, Any]:
    """The resolved config of Hydra ``overrides`` composed outside ``@hydra.main`` (``flwr run``'s ``overrides``
    run-config key), after every check the ``perfedavg`` command makes before Hydra runs: misspelled keys and group
    options (:func:`~perfedavg.config.check_overrides`), types and keys no run reads (:func:`check_composes`), then
    :func:`prepare`. A mistake raises :class:`~perfedavg.config.ConfigError` with the command's one line.

    ``machine_checks=False`` stops after the ranges and combinations (:func:`~perfedavg.config.validate`): the data
    set, the device and the exact mode's memory are checked where the run will execute (a remote SuperLink's
    ServerApp), not on the machine that submits it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    check_overrides(overrides, str(CONF_DIR))
    cfg = check_composes(overrides)  # parses them first: a syntax error is its one line
    swept = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
    if swept:
        raise ConfigError(f"{' '.join(swept)}: a sweep runs several federations; start it with `perfedavg -m …`")
    if not machine_checks:
        validate(cfg)
        return to_container(cfg)
    return prepare(cfg)
