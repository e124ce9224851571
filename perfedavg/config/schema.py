"""The structured configuration schema (types and allowed values) and the range checks Hydra cannot express.

Hydra composes ``conf/config.yaml`` on top of :class:`Config` (registered as ``base_config``), so a wrong type
(``alpha=abc``), an unknown enum value (``hessian.mode=bogus``) or a misspelled key (``alpah=0.1``) fails at
composition with the key named. :func:`validate` then checks ranges and combinations and raises
:class:`ConfigError` listing every problem, each naming the key, the value and what is allowed.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field, make_dataclass
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from perfedavg import algorithms
from perfedavg.errors import UserError
from perfedavg.sampling import clients_per_round


class ConfigError(UserError, ValueError):
    """One or more configuration values are out of range or incompatible."""


class HessianMode(StrEnum):
    exact = "exact"
    hvp = "hvp"
    fd = "fd"
    diag = "diag"
    fo = "fo"


class ModelName(StrEnum):
    ann = "ann"
    net = "net"
    mlp = "mlp"
    cnn = "cnn"
    lstm = "lstm"


class DatasetName(StrEnum):
    regression = "regression"
    synthetic = "synthetic"
    digits = "digits"
    mnist = "mnist"
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"
    shakespeare = "shakespeare"
    text = "text"


class PartitionName(StrEnum):
    iid = "iid"
    dirichlet = "dirichlet"
    pathological = "pathological"
    shard = "shard"
    paper = "paper"
    natural = "natural"  # generated per client: nothing to split


class MinSizeRule(StrEnum):
    """How ``partition=dirichlet`` gives every client ``min_partition_size`` examples
    (:mod:`perfedavg.data.dirichlet_partitioner`)."""

    redraw = "redraw"  # Flower's rule: up to 10 redraws; if none reaches the minimum, the last draw is topped up
    top_up = "top_up"  # the first draw topped up at once (many clients: redraws would only cost time)


class Task(StrEnum):
    classification = "classification"
    regression = "regression"


class Aggregation(StrEnum):
    uniform = "uniform"
    weighted = "weighted"


class Device(StrEnum):
    auto = "auto"  # a CUDA GPU where the client process sees one, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class EvalSplit(StrEnum):
    test = "test"  # each client's held-out test split (results)
    val = "val"  # each client's validation split, held out of its training data (tuning; needs val_fraction > 0)


class Backend(StrEnum):
    ray = "ray"  # Flower's simulation engine: clients in parallel Ray actors
    inprocess = "inprocess"  # clients one after another in this process: no Ray, breakpoints work


@dataclass
class ModelConf:
    name: ModelName = MISSING
    input_shape: list[int] = MISSING  # per-example input shape, from the dataset
    num_outputs: int = MISSING  # classes or regression targets, from the dataset
    hidden: list[int] = field(default_factory=lambda: [80, 60])  # MLP: its hidden widths; CNN: [its FC width]
    channels: list[int] = field(default_factory=lambda: [32, 64])  # CNN only: its two convolutions' widths
    embedding: int = 8  # LSTM only: the character embedding's width
    layers: int = 2  # LSTM only: stacked LSTM layers (their width: hidden)


@dataclass
class HessianConf:
    mode: HessianMode = MISSING
    max_memory_gb: float | None = None  # exact mode: budget for the P×P Hessian (default: half of free memory)


@dataclass
class DatasetConf:
    name: DatasetName = MISSING
    task: Task = MISSING
    input_shape: list[int] = MISSING
    num_classes: int = 0  # classification only
    num_targets: int = 0  # regression only
    test_fraction: float = 0.2
    val_fraction: float = 0.0  # share of each client's training split held out for validation (eval_split=val)
    samples_per_client: int = 64  # regression: examples per client
    heterogeneity: float = 1.0  # regression: spread of the per-client tasks
    noise: float = 0.1  # regression: label noise standard deviation
    synthetic_alpha: float = 0.5  # synthetic: spread of the users' models (FedProx's α)
    synthetic_beta: float = 0.5  # synthetic: spread of the users' inputs (FedProx's β)
    path: str | None = None  # hub data sets: a local directory (parquet files or an image folder) instead of the hub
    cache_dir: str | None = None  # hub data sets: Hugging Face cache directory (default ~/.cache/huggingface)
    image_key: str | None = None  # hub data sets: image column (default: the data set's own, else image/img)
    label_key: str | None = None  # hub data sets: label column (default: label)
    client_columns: list[str] | None = None  # text data sets: the columns naming a row's client (e.g. [play, role])
    text_column: str | None = None  # text data sets: the column holding a client's text
    min_chars: int = 450  # text data sets: a row needs this many characters to be a client


@dataclass
class PartitionConf:
    name: PartitionName = MISSING
    alpha: float = 0.5  # dirichlet: concentration (smaller: more skewed label mixes)
    min_partition_size: int = 10  # dirichlet: every client gets at least this many examples (see min_size_rule)
    min_size_rule: MinSizeRule = MinSizeRule.redraw  # dirichlet: what reaches min_partition_size (MinSizeRule)
    classes_per_client: int = 2  # pathological: distinct labels per client
    shards_per_client: int = 2  # shard: label-sorted shards per client (McMahan et al. 2017)
    images_per_class: int = 196  # paper: a (group A: a of each lower class; group B: a/2 lower + 2a upper)


@dataclass
class DiagnosticsConf:
    every: int = 0  # every this many rounds, curvature diagnostics at each client's first meta-step (0: off)


@dataclass
class StabilityConf:
    """The stability monitor (perfedavg.curvature.stability): λ_max of each trained client's minibatch Hessian."""

    every: int | None = None  # every this many rounds (0: off; null: 20 where the run applies (I − αH), off for fo)
    iterations: int = 20  # Lanczos steps per client (Hessian-vector products)
    warn_above: float = 2.0  # the α·λ_max a client is counted unstable above
    warn_fraction: float = 0.5  # warn when at least this share of the monitored clients is above warn_above
    safeguard: float | None = None  # c: every trained client's inner step min(α, c / λ_max) (an extension; null: off)


@dataclass
class Config:
    """The run config's schema. ``algorithm`` (its ``name`` and its own keys) is typed by :func:`schema` from the
    algorithms' declarations (:mod:`perfedavg.algorithms.declaration`); ``step_sizes`` maps a method to its tuned
    values of the keys its search space holds (:func:`step_size_problems` checks them)."""

    model: ModelConf = MISSING
    hessian: HessianConf = MISSING
    algorithm: Any = MISSING
    dataset: DatasetConf = MISSING
    partition: PartitionConf = MISSING
    num_rounds: int = 20
    num_clients: int = 20
    fraction: float = 0.5
    local_steps: int = 5
    batch_size: int = 16
    alpha: float = 0.01
    beta: float = 0.05
    delta: float = 1e-3
    adapt_steps: int = 1
    adapt_batch: int | None = None  # the personalization steps' gradient over at most this many training examples
    seed: int = 0
    eval_every: int = 1
    eval_fraction: float = 1.0
    eval_split: EvalSplit = EvalSplit.test  # which split evaluation reports: test, or val (tuning never sees test)
    aggregation: Aggregation = Aggregation.uniform
    min_clients: int = 1  # a training round with fewer successful clients stops the run
    round_timeout_s: float | None = 600.0  # replies not in by then count as failed (timeout); null: wait forever
    client_cpus: float = 1.0
    client_gpus: float = 0.0  # share of a GPU each Ray actor reserves (Flower's convention; 0.5: two per GPU)
    inprocess_workers: int | None = None  # backend=inprocess: clients at once (threads); null: task.inprocess_workers
    device: Device = Device.auto  # where clients compute; aggregation stays on the CPU
    verbose: bool = False
    backend: Backend = Backend.ray
    ray_address: str | None = None  # null: this run's own local Ray; auto or HOST:PORT: join a running Ray cluster
    # Per-method α, β (e.g. tuned: conf/experiment/paper_mnist_tuned.yaml), read by `alpha: ${per_method:alpha}`
    step_sizes: dict[str, dict[str, Any]] | None = None
    diagnostics: DiagnosticsConf = field(default_factory=DiagnosticsConf)  # perfedavg.curvature.diagnostics
    stability: StabilityConf = field(default_factory=StabilityConf)  # perfedavg.curvature.stability
    resume: str | None = None  # a run directory whose last checkpoint to continue from; auto: this run's own (sweeps)


#: Overrides that say where or how a run executes, not what it computes: left out of the HPARAMS record, of a sweep
#: run's name (conf/config.yaml's hydra.job.config.override_dirname.exclude_keys) and of a tuned experiment's setting.
EXECUTION_KEYS = frozenset(
    {
        "dataset.path",
        "dataset.cache_dir",
        "resume",
        "verbose",
        "backend",
        "ray_address",
        "client_cpus",
        "client_gpus",
        "inprocess_workers",
        "device",
        "round_timeout_s",
    }
)


@functools.cache
def algorithm_schema() -> type:
    """``AlgorithmConf``: the ``algorithm`` node's schema, made from the declarations: ``name`` (one of the declared
    algorithms) and every key some algorithm declares, typed (int or float) and ``None`` where the chosen algorithm
    does not set it (a key the chosen one does not read is refused on the command line: :func:`ineffective_overrides`).
    """
    keys: dict[str, bool] = {}  # name → integer (in every declaration that has it)
    for d in algorithms.declarations().values():
        for k in d.keys:
            keys[k.name] = keys.get(k.name, True) and k.integer
    fields_ = [("name", str, MISSING)] + [(k, (int if integer else float) | None, None) for k, integer in keys.items()]
    return make_dataclass("AlgorithmConf", fields_)


@functools.cache
def schema() -> type:
    """:class:`Config` with its ``algorithm`` node typed by :func:`algorithm_schema` (registered as ``base_config``)."""
    return make_dataclass("Config", [("algorithm", algorithm_schema(), MISSING)], bases=(Config,))


def plugin_declarations() -> dict[str, Any]:
    """The declarations of the algorithms installed packages add (not in ``conf/algorithm/``)."""
    built_in = {cls.declaration.name for cls in algorithms.built_in()}
    return {n: d for n, d in algorithms.declarations().items() if n not in built_in}


def method_name(algorithm: str, hessian_mode: str) -> str:
    """The method a run compares in the result tables: Per-FedAvg's Hessian mode (``fo``, ``fd``, ``hvp``, ``exact``,
    ``diag``), or the algorithm's name for the others (``fedavg``, ``pfedme``, ``ditto``: they ignore the mode); from
    the declarations (:meth:`~perfedavg.algorithms.declaration.Declaration.methods`)."""
    return algorithms.method_of(algorithm, hessian_mode)


def _per_method(key: str, *, _root_: DictConfig) -> Any:
    """``${per_method:alpha}``: ``step_sizes[<this run's method>].<key>`` (see :func:`method_name`). A key the
    method's entry does not hold takes its default: the schema's for a shared key (``adapt_steps`` of a method whose
    search does not tune it), the algorithm's declared one for ``lam``, ``inner_steps``…, and ``None`` where the
    run's algorithm does not read the key at all (unread: e.g. ``lam`` of Per-FedAvg in a tuned experiment with
    pFedMe)."""
    method = method_name(str(_root_.algorithm.name), str(_root_.hessian.mode))
    table = _root_.get("step_sizes") or {}
    if method not in table:
        have = ", ".join(table) or "none"
        raise ConfigError(f"{key}=${{per_method:{key}}}: step_sizes has no entry for method {method} (has: {have})")
    value = table[method].get(key)
    if value is not None:
        return value
    name = str(_root_.algorithm.name)
    declared = algorithms.declaration_of(name).key(key)
    if declared is not None:
        return declared.default
    if key in algorithms.declaration_of(name).search_space():  # a shared key its method tunes: the entry must hold it
        raise ConfigError(f"{key}=${{per_method:{key}}}: step_sizes.{method} has no {key}")
    if key in Config.__dataclass_fields__:  # a shared key this method does not tune (or read): the schema's default
        return Config.__dataclass_fields__[key].default
    return None


#: Longest run-directory name :func:`short_name` leaves as it is (file systems allow 255 bytes per name).
MAX_RUN_NAME = 120


def short_name(name: str) -> str:
    """``${short_name:…}``: a sweep run's directory name from its overrides, at most :data:`MAX_RUN_NAME` characters
    (a longer one keeps its start and gets a checksum of the whole, so names stay distinct); ``/`` becomes ``_``."""
    import zlib

    name = str(name).replace("/", "_")
    if len(name) <= MAX_RUN_NAME:
        return name
    return f"{name[: MAX_RUN_NAME - 9]}~{zlib.crc32(name.encode()):08x}"


#: The CLI tells a sweep's jobs which keys the command sweeps, in its order (comma-separated), through this variable.
SWEPT_KEYS_VARIABLE = "PERFEDAVG_SWEPT_KEYS"


def swept_keys() -> list[str]:
    """The keys the running sweep varies (``-m hessian=fo,hvp seed=0,1``: ``hessian``, ``seed``); none outside a sweep
    or where the sweeper chooses the values itself (Optuna's search space)."""
    return [k for k in os.environ.get(SWEPT_KEYS_VARIABLE, "").split(",") if k]


def run_name(override_dirname: str, task_overrides: Any) -> str:
    """``${run_name:…}``: a sweep job's directory (and TensorBoard run) name: the values of the swept keys in the
    command's order (``hessian=fo,seed=0``), which stay visible where TensorBoard cuts long names; the keys every job
    shares are left out. Without known swept keys, Hydra's ``override_dirname`` (every override, sorted).
    At most :data:`MAX_RUN_NAME` characters (:func:`short_name`)."""
    swept = swept_keys()
    given = {str(o).lstrip("+~").split("=", 1)[0]: str(o).lstrip("+~") for o in (task_overrides or [])}
    chosen = [given[k] for k in swept if k in given]
    return short_name(",".join(chosen) if chosen else override_dirname)


def register_schema() -> None:
    """Register :class:`Config` as ``base_config`` so ``conf/config.yaml`` can extend it, and the resolvers its
    configs use (``per_method`` for per-method step sizes, ``short_name`` for sweep run names)."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=schema())
    for name, declared in plugin_declarations().items():  # a plugin's group option (`algorithm=NAME`) from its keys
        store.store(group="algorithm", name=name, node={"name": name, **declared.defaults()})
    if not OmegaConf.has_resolver("per_method"):
        OmegaConf.register_new_resolver("per_method", _per_method)
    if not OmegaConf.has_resolver("short_name"):
        OmegaConf.register_new_resolver("short_name", short_name)
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name)


def _positive(name: str, value: Any, problems: list[str], integer: bool = False) -> None:
    kind = "integer" if integer else "number"
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        problems.append(f"{name}={value}: must be a positive {kind}")


def needs_hydra_runtime(cfg: DictConfig) -> bool:
    """True if ``cfg`` resolves only inside a Hydra job (``${hydra:runtime.cwd}`` and the like): such a config is
    checked by the job, not before Hydra starts."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as e:
        return "HydraConfig was not set" in str(e)
    return False


def validate(cfg: DictConfig) -> None:
    """Check ranges and combinations; raise :class:`ConfigError` with one line per problem."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as e:  # e.g. a ${per_method:…} without a table entry for this method
        message = str(e).splitlines()[0].removeprefix("ConfigError raised while resolving interpolation: ")
        raise ConfigError(message) from None
    problems: list[str] = []
    for key in ("num_rounds", "num_clients", "local_steps", "batch_size", "adapt_steps", "eval_every", "min_clients"):
        _positive(key, cfg[key], problems, integer=True)
    for key in ("alpha", "beta", "delta", "client_cpus"):
        _positive(key, cfg[key], problems)
    for key in ("fraction", "eval_fraction"):
        if not 0 < cfg[key] <= 1:
            problems.append(f"{key}={cfg[key]}: must be in (0, 1]")
    if not 0 < cfg.dataset.test_fraction < 1:
        problems.append(f"dataset.test_fraction={cfg.dataset.test_fraction}: must be in (0, 1)")
    if not 0 <= cfg.dataset.val_fraction < 1:
        problems.append(f"dataset.val_fraction={cfg.dataset.val_fraction}: must be in [0, 1)")
    elif cfg.eval_split == EvalSplit.val and cfg.dataset.val_fraction == 0:
        problems.append("eval_split=val: there is no validation split; set dataset.val_fraction > 0 (e.g. 0.2)")
    if not (math.isfinite(cfg.client_gpus) and cfg.client_gpus >= 0):
        problems.append(f"client_gpus={cfg.client_gpus}: must be ≥ 0 (a share of one GPU per client, e.g. 0.5)")
    if cfg.adapt_batch is not None:
        _positive("adapt_batch", cfg.adapt_batch, problems, integer=True)
    if cfg.inprocess_workers is not None:
        _positive("inprocess_workers", cfg.inprocess_workers, problems, integer=True)
        traces = cfg.hessian.mode == "diag" and algorithms.declaration_of(cfg.algorithm.name).uses_hessian
        if cfg.inprocess_workers > 1 and traces:
            problems.append(
                f"inprocess_workers={cfg.inprocess_workers}: hessian=diag computes clients one at a time in-process "
                "(BackPACK's torch.fx tracing patches torch.nn.Module for the whole process, under every other "
                "thread's forward pass); leave inprocess_workers unset or 1, or use backend=ray (processes)"
            )
    if cfg.round_timeout_s is not None:
        _positive("round_timeout_s", cfg.round_timeout_s, problems)
    if cfg.hessian.max_memory_gb is not None:
        _positive("hessian.max_memory_gb", cfg.hessian.max_memory_gb, problems)
    sampled = clients_per_round(cfg.num_clients, cfg.fraction)
    if cfg.min_clients > sampled:
        problems.append(
            f"min_clients={cfg.min_clients}: more than the {sampled} clients sampled per round "
            f"(fraction={cfg.fraction} of num_clients={cfg.num_clients})"
        )
    if cfg.seed < 0:
        problems.append(f"seed={cfg.seed}: must be a non-negative integer")
    if cfg.ray_address is not None and not RAY_ADDRESS.fullmatch(str(cfg.ray_address)):
        problems.append(
            f"ray_address={cfg.ray_address}: must be auto (the cluster `ray start` left on this machine) or HOST:PORT "
            "(a Ray cluster's head, e.g. 10.0.0.5:6379); leave it unset for this run's own local Ray"
        )
    problems += _algorithm_problems(cfg)
    if cfg.diagnostics.every < 0:
        problems.append(f"diagnostics.every={cfg.diagnostics.every}: must be ≥ 0 (rounds between diagnostics; 0: off)")
    problems += _stability_problems(cfg.stability)
    problems += _partition_problems(cfg)
    problems += _model_dataset_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def _stability_problems(stability: DictConfig) -> list[str]:
    problems = []
    if stability.every is not None and stability.every < 0:
        problems.append(f"stability.every={stability.every}: must be ≥ 0 (rounds between stability probes; 0: off)")
    if stability.iterations < 1:
        problems.append(f"stability.iterations={stability.iterations}: must be ≥ 1 (Lanczos steps per client)")
    if not (math.isfinite(stability.warn_above) and stability.warn_above > 0):
        problems.append(f"stability.warn_above={stability.warn_above}: must be a positive number (an α·λ_max level)")
    if not (0 < stability.warn_fraction <= 1):
        problems.append(
            f"stability.warn_fraction={stability.warn_fraction}: must be in (0, 1] (a share of the monitored clients)"
        )
    if stability.safeguard is not None and not (math.isfinite(stability.safeguard) and stability.safeguard > 0):
        problems.append(
            f"stability.safeguard={stability.safeguard}: must be a positive number c (each client's inner step "
            "becomes min(alpha, c / λ_max)) or null (off)"
        )
    return problems


def _algorithm_problems(cfg: DictConfig) -> list[str]:
    """The algorithm's name and the values of its own keys, checked against its declaration; and ``step_sizes``."""
    name = str(cfg.algorithm.name)
    known = algorithms.declarations()
    if name not in known:
        return [f"algorithm.name={name}: not an algorithm; allowed: {', '.join(known)}"]
    problems = []
    for key in known[name].keys:
        value = cfg.algorithm.get(key.name)
        if value is not None and (problem := key.problem(value)) is not None:
            problems.append(problem)
    return problems + step_size_problems(cfg.get("step_sizes") or {})


def step_size_problems(table: Any) -> list[str]:
    """``step_sizes`` (a tuned experiment's per-method values): each entry must name a method and hold only keys that
    method's search space has (:meth:`~perfedavg.algorithms.declaration.Declaration.search_space`)."""
    methods, problems = algorithms.methods(), []
    for method, entry in table.items():
        if method not in methods:
            problems.append(f"step_sizes.{method}: not a method; allowed: {', '.join(methods)}")
            continue
        allowed = [k.removeprefix("algorithm.") for k in methods[method][1].search_space()]
        problems += [
            f"step_sizes.{method}.{k}: not a key the method tunes; allowed: {', '.join(allowed)}"
            for k in entry or {}
            if k not in allowed
        ]
    return problems


def _partition_problems(cfg: DictConfig) -> list[str]:
    from perfedavg.data.partition import GENERATED_DATASETS, NATURAL_DATASETS  # numpy only: no torch at config import

    data, part = DatasetName(cfg.dataset.name), PartitionName(cfg.partition.name)
    if data in NATURAL_DATASETS and part is not PartitionName.natural:
        how = "is generated per client" if data in GENERATED_DATASETS else "is one client per row by nature"
        return [f"partition={part.value}: dataset={data.value} {how}; use partition=natural"]
    if data not in NATURAL_DATASETS and part is PartitionName.natural:
        allowed = ", ".join(p.value for p in PartitionName if p is not PartitionName.natural)
        return [f"partition=natural: dataset={data.value} is one pool split across clients; use one of: {allowed}"]
    problems = []
    if part is PartitionName.dirichlet and not cfg.partition.alpha > 0:
        problems.append(f"partition.alpha={cfg.partition.alpha}: must be a positive number")
    if part is PartitionName.dirichlet and cfg.partition.min_partition_size < 0:
        problems.append(f"partition.min_partition_size={cfg.partition.min_partition_size}: must be ≥ 0")
    if part is PartitionName.pathological and not 1 <= cfg.partition.classes_per_client <= cfg.dataset.num_classes:
        problems.append(
            f"partition.classes_per_client={cfg.partition.classes_per_client}: must be between 1 and "
            f"{cfg.dataset.num_classes} (dataset={data.value} has {cfg.dataset.num_classes} classes)"
        )
    if part is PartitionName.shard and cfg.partition.shards_per_client < 1:
        problems.append(f"partition.shards_per_client={cfg.partition.shards_per_client}: must be a positive integer")
    if part is PartitionName.paper:
        a = cfg.partition.images_per_class
        if a < 2 or a % 2:
            problems.append(f"partition.images_per_class={a}: must be an even number ≥ 2 (group B gets a/2)")
        if cfg.num_clients < 2:
            problems.append(f"num_clients={cfg.num_clients}: partition=paper needs at least 2 clients (two groups)")
    return problems


def _model_dataset_problems(cfg: DictConfig) -> list[str]:
    model, data = cfg.model, cfg.dataset
    shape = list(data.input_shape)
    name, task, data_name = ModelName(model.name), Task(data.task), DatasetName(data.name).value
    if name is ModelName.ann:
        if task is not Task.regression or shape != [3] or data.num_targets != 5:
            return [
                f"model=ann: the seed's ANN maps 3 features to 5 targets and needs a regression dataset "
                f"(dataset=regression); dataset={data_name} gives {task.value} with input shape {shape}"
            ]
        return []
    if task is not Task.classification:
        return [f"model={name.value}: is a classifier; dataset={data_name} is a {task.value} dataset (use model=ann)"]
    text = data_name in ("shakespeare", "text")
    if (name is ModelName.lstm) != text:
        if text:
            return [f"model={name.value}: dataset={data_name} is text (character ids); use model=lstm"]
        return [f"model=lstm: reads character ids; dataset={data_name} is not text (use dataset=shakespeare or text)"]
    if name is ModelName.lstm:
        if len(model.hidden) != 1 or model.hidden[0] < 1 or model.embedding < 1 or model.layers < 1:
            return [
                f"model.hidden={list(model.hidden)}, model.embedding={model.embedding}, model.layers="
                f"{model.layers}: the LSTM takes one positive width, a positive embedding and at least one layer"
            ]
        return []
    if name in (ModelName.net, ModelName.cnn) and len(shape) != 3:
        return [f"model={name.value}: needs image inputs [channels, height, width]; dataset={data_name} gives {shape}"]
    if name is ModelName.cnn:
        return _cnn_problems(model, shape, data_name)
    if name is ModelName.mlp and any(h < 1 for h in model.hidden):
        return [f"model.hidden={list(model.hidden)}: hidden layer widths must be positive"]
    return []


def _cnn_problems(model: Any, shape: list[int], data_name: str) -> list[str]:
    """What keeps ``model=cnn`` from being built: its sizes, and inputs too small for two 2×2 poolings."""
    problems = []
    if len(model.channels) != 2 or any(c < 1 for c in model.channels):
        given = list(model.channels)
        problems.append(f"model.channels={given}: the CNN has two convolutions; give two positive widths")
    if len(model.hidden) != 1 or model.hidden[0] < 1:
        problems.append(f"model.hidden={list(model.hidden)}: the CNN has one hidden layer; give one positive width")
    if min(shape[1:]) < 4:
        problems.append(
            f"model=cnn: pools twice by 2 and needs inputs of at least 4×4; dataset={data_name} gives {shape}"
        )
    return problems


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python (enums as their string values)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


#: Config groups: choosing one is ``group=option`` with ``conf/<group>/<option>.yaml``.
GROUPS: tuple[str, ...] = ("model", "dataset", "partition", "hessian", "algorithm", "experiment")


#: What other federated-learning tools call a top-level key: their name → ours (a better hint than spelling alone;
#: ``clients_per_round`` is not ``client_gpus``).
ALIASES: dict[str, str] = {
    "clients_per_round": "fraction",
    "num_clients_per_round": "fraction",
    "fraction_fit": "fraction",
    "fraction_evaluate": "eval_fraction",
    "rounds": "num_rounds",
    "global_rounds": "num_rounds",
    "local_epochs": "local_steps",
    "local_iters": "local_steps",
    "lr": "beta",
    "learning_rate": "beta",
    "inner_lr": "alpha",
    "outer_lr": "beta",
    "personal_learning_rate": "alpha",
    "mode": "hessian",
}


def check_overrides(overrides: list[str], conf_dir: str) -> None:
    """Catch misspelled keys and unknown group options before Hydra composes, with a suggestion.

    ``key=value`` must name a field of :class:`Config` (dotted for nested groups, e.g. ``hessian.max_memory_gb``)
    and ``group=option`` an existing ``conf/<group>/<option>.yaml``. Adding or deleting keys (``+key=…``,
    ``++key=…``, ``~key``) is refused: every key perfedavg reads is in the schema. Hydra's own overrides
    (``hydra.*``, ``hydra/…``, also with ``+``) are left to Hydra.
    """
    import difflib
    from dataclasses import fields, is_dataclass
    from pathlib import Path

    for i, arg in enumerate(overrides):  # `alpha = 0.1` arrives as three arguments
        after = overrides[i + 1] if i + 1 < len(overrides) else ""
        if arg.startswith("=") or (arg.endswith("=") and after and "=" not in after and not after.startswith("-")):
            raise ConfigError(
                f"{' '.join(overrides[max(0, i - 1) : i + 2])}: an override is key=value without spaces around '=' "
                f"(e.g. alpha=0.1)"
            )
    for override in overrides:
        bare = override.lstrip("+~")
        if override.startswith("-") or bare.startswith(("hydra.", "hydra/", "hydra=")):
            continue
        if override.startswith(("+", "~")):
            verb = "deleting" if override.startswith("~") else "adding"
            raise ConfigError(
                f"{override}: {verb} keys is not supported; every key perfedavg reads is in conf/config.yaml "
                f"(set one with key=value; keys: {', '.join(f.name for f in fields(Config))})"
            )
        if "=" not in override:
            continue
        key, value = override.split("=", 1)
        if key in GROUPS:
            options = sorted(p.stem for p in (Path(conf_dir) / key).glob("*.yaml"))
            options += sorted(plugin_declarations()) if key == "algorithm" else []
            for choice in value.split(","):
                if choice not in options and not (key == "experiment" and choice == "null"):
                    raise ConfigError(f"{key}={choice}: not an option of '{key}'; allowed: {', '.join(options)}")
            continue
        if key.split(".")[0] == "step_sizes":
            method, _, entry_key = key.removeprefix("step_sizes").lstrip(".").partition(".")
            problems = step_size_problems({method: {entry_key.split(".")[0]: None} if entry_key else {}})
            if problems:
                raise ConfigError(f"{key}={value}: {problems[0].split(': ', 1)[1]}")
            continue
        node: Any = schema()
        for depth, part in enumerate(key.split(".")):
            names = [f.name for f in fields(node)] if is_dataclass(node) else []
            if part not in names:
                where = ".".join(key.split(".")[:depth]) or "the top level"
                alias = ALIASES.get(part) if depth == 0 else None
                hint = [alias] if alias else difflib.get_close_matches(part, names, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(
                    f"{key}={value}: unknown key '{part}' in {where}{suggestion}; allowed: {', '.join(names)}"
                )
            node = next(f.type for f in fields(node) if f.name == part)
            node = globals().get(node, node) if isinstance(node, str) else node


def sweep_values(override: Any) -> list[str] | None:
    """The values a parsed sweep override (``hessian=fo,fd``, ``seed=range(5)``) takes, or ``None`` where Hydra cannot
    list them (Optuna's ``interval(…)``: only its sampler knows)."""
    try:
        return list(override.sweep_string_iterator())
    except Exception:  # noqa: BLE001 - Hydra raises various errors for sweeps it cannot enumerate
        return None


#: ``ray_address`` values: ``auto`` or ``HOST:PORT`` (a Ray head's GCS address, as ``ray start --head`` prints it).
RAY_ADDRESS = re.compile(r"auto|[A-Za-z0-9.\-]+:[0-9]{1,5}")

#: Keys read only under some choice of a group other than ``algorithm``: key → (the choice's key, the values under
#: which the key is read). Which algorithm reads a key is its declaration's to say (:func:`algorithm_readers`).
READ_ONLY_WITH: dict[str, tuple[str, tuple[str, ...]]] = {
    "dataset.path": ("dataset.name", ("mnist", "fashion_mnist", "cifar10", "shakespeare", "text")),
    **{
        f"dataset.{k}": ("dataset.name", ("mnist", "fashion_mnist", "cifar10"))
        for k in ("cache_dir", "image_key", "label_key")
    },
    **{
        f"dataset.{k}": ("dataset.name", ("shakespeare", "text"))
        for k in ("client_columns", "text_column", "min_chars")
    },
    **{f"dataset.{k}": ("dataset.name", ("regression",)) for k in ("samples_per_client", "heterogeneity", "noise")},
    **{f"dataset.{k}": ("dataset.name", ("synthetic",)) for k in ("synthetic_alpha", "synthetic_beta")},
    "partition.alpha": ("partition.name", ("dirichlet",)),
    "partition.min_partition_size": ("partition.name", ("dirichlet",)),
    "partition.min_size_rule": ("partition.name", ("dirichlet",)),
    "partition.classes_per_client": ("partition.name", ("pathological",)),
    "partition.shards_per_client": ("partition.name", ("shard",)),
    "partition.images_per_class": ("partition.name", ("paper",)),
    "model.hidden": ("model.name", ("mlp", "cnn", "lstm")),
    "model.channels": ("model.name", ("cnn",)),
    "model.embedding": ("model.name", ("lstm",)),
    "model.layers": ("model.name", ("lstm",)),
    "hessian.max_memory_gb": ("hessian.mode", ("exact",)),
    "delta": ("hessian.mode", ("fd",)),
    "ray_address": ("backend", ("ray",)),
    "inprocess_workers": ("backend", ("inprocess",)),
}


def algorithm_readers(key: str) -> tuple[str, ...] | None:
    """The algorithms that read ``key``, from their declarations: ``algorithm.<k>`` by those that declare ``k``, the
    algorithm-dependent shared keys (α, β, ``adapt_steps``, ``delta``, ``diagnostics.every``) by those whose
    :meth:`~perfedavg.algorithms.base.Algorithm.reads` has them, ``hessian.*`` by those that use the Hessian mode;
    ``None`` for a key every algorithm reads."""
    from perfedavg.algorithms.declaration import ALGORITHM_DEPENDENT_KEYS

    names = algorithms.declarations()
    if key.startswith("algorithm.") and key != "algorithm.name":
        return tuple(n for n, d in names.items() if d.key(key.removeprefix("algorithm.")) is not None)
    if key in ALGORITHM_DEPENDENT_KEYS:
        return tuple(n for n in names if key in algorithms.reads(n))
    if key == "hessian" or key.startswith("hessian."):  # the group choice and its keys
        return tuple(n for n, d in names.items() if d.uses_hessian)
    return None


def _select(cfg: Any, key: str) -> Any:
    """``cfg``'s value at the dotted ``key``: a DictConfig, a nested mapping, or a flattened one (``{"a.b": …}``)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.select(cfg, key)
    if key in cfg:
        return cfg[key]
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if hasattr(node, "get") else None
    return node


def unread_reasons(cfg: Any, key: str) -> list[str]:
    """Why a run of ``cfg`` does not read ``key``: one ``group=choice; read only with group=…`` per choice that
    rules it out (none: the run reads it)."""
    reasons = []
    readers = algorithm_readers(key)
    actual = str(_select(cfg, "algorithm.name"))
    if readers is not None and actual in algorithms.declarations() and actual not in readers:
        reasons.append(f"algorithm={actual}; it is read only with algorithm={' or '.join(readers) or '(none)'}")
    if key in READ_ONLY_WITH:
        choice, allowed = READ_ONLY_WITH[key]
        actual = str(_select(cfg, choice))
        if actual not in allowed:
            group = choice.split(".")[0]
            reasons.append(f"{group}={actual}; it is read only with {group}={' or '.join(allowed)}")
    return reasons


def reads_key(cfg: Any, key: str) -> bool:
    """True if a run of ``cfg`` reads ``key`` (see :func:`unread_reasons`)."""
    return not unread_reasons(cfg, key)


def ineffective_overrides(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """One line per ``key=value`` among ``overrides`` that the composed ``cfg`` never reads (e.g. ``dataset.path``
    with a generated data set, ``algorithm.lam`` with Per-FedAvg), naming the choice that would read it."""
    problems = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key in GROUPS:  # a group choice (hessian=fo with Ditto: the tuner's way of naming the method) is harmless
            continue
        problems += [
            f"{key}={value}: has no effect with {reason} (remove it, or choose one of those)"
            for reason in unread_reasons(cfg, key)
        ]
    return problems
