"""Flower ClientApp: Message ↔ torch. All algorithmic work is in :mod:`perfedavg.algorithms`.

Each message carries the global weights (``ArrayRecord`` "arrays") and a ``ConfigRecord`` "config" holding the
round number and the whole resolved run configuration as JSON, so the same app serves the simulation engine and
the Deployment Engine without any other channel. A client's identity is its ``partition-id`` (node config); its
data is built once per process and reused across rounds.

A stateful algorithm's per-client state (Ditto's personal model, ``[P]``) lives in the node's ``Context.state``
(:mod:`perfedavg.federation.state_records`: the state, stamped with the round that produced it): Flower keeps a node's
context with the engine, not in the worker process, so a Ray worker that dies or is replaced loses nothing. Each
message says which round's state the server expects (``config["state-round"]``; 0: the initial model) and carries
the state itself (``"state"``) where the server cannot rely on the node having it (after a resume, or after that
client failed); every training reply sends the new state back, for the server's checkpoints
(:mod:`perfedavg.federation.loop`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from perfedavg import algorithms, curvature, task
from perfedavg.curvature import diagnostics, stability
from perfedavg.data import ClientData, data_params, load_client
from perfedavg.data.client_cache import ClientCache
from perfedavg.federation.state_records import STATE_ARRAYS, STATE_ROUND, pack_state, unpack_state


@functools.lru_cache(maxsize=4)
def _parsed(config_json: str) -> dict[str, Any]:
    return json.loads(config_json)


def partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


#: This process's clients' tensors (built once, kept within the bound of :mod:`perfedavg.data.client_cache`).
CLIENTS = ClientCache()


def client_data(cfg: dict[str, Any], client_id: int) -> ClientData:
    """This client's data on the run's compute device, built once per process and kept (see :data:`CLIENTS`)."""
    return _client_data(_worker(json.dumps(cfg, sort_keys=True)), cfg, client_id)


def _client_data(worker: Worker, cfg: dict[str, Any], client_id: int) -> ClientData:
    def build() -> ClientData:
        data = load_client(data_params(cfg), client_id, cfg["num_clients"], cfg["seed"])
        return data if worker.device.type == "cpu" else data.to(worker.device)

    return CLIENTS.get((worker.data_key, client_id), build)


def client_generator(seed: int, client_id: int, server_round: int) -> torch.Generator:
    """Minibatch randomness that depends only on (seed, client, round), never on which worker runs the client."""
    key = f"{seed}/{client_id}/{server_round}".encode()
    return torch.Generator().manual_seed(zlib.crc32(key) * 2**20 + seed)


@dataclass(frozen=True)
class Worker:
    """What a process needs to serve messages of one run, built once per run config (nothing of it is recomputed
    per message): the model (one module per process, reused: building one costs more than loading weights into it,
    and the BackPACK cache of ``hessian=diag`` stays warm), its loss, the local-update spec, the compute device and
    the key of the run's client data."""

    model: torch.nn.Module
    loss_fn: torch.nn.Module
    spec: algorithms.LocalSpec
    algorithm: algorithms.Algorithm
    initial: torch.Tensor  # the run's initial model, flat [P] (a stateful algorithm's state before its first round)
    classification: bool
    device: torch.device
    tensors: dict[str, torch.Tensor]  # the model's parameters and buffers by state-dict name (live tensors)
    data_key: str  # what identifies this run's client data in :data:`CLIENTS` (with the client id)


#: Each thread's workers by run config (the in-process pool runs clients in several threads: one model each).
_THREAD_WORKERS = threading.local()
#: Building a model seeds torch's global generator (:func:`perfedavg.task.build_model`): one build at a time.
_BUILD_LOCK = threading.Lock()
#: Workers kept per thread (runs of other configs in the same process: tests, a sweep in one process).
WORKERS_PER_THREAD = 4


def _worker(config_json: str) -> Worker:
    """This thread's :class:`Worker` for the run config ``config_json``, built on its first message and kept (the
    last :data:`WORKERS_PER_THREAD` configs per thread)."""
    cache: OrderedDict[str, Worker] | None = getattr(_THREAD_WORKERS, "cache", None)
    if cache is None:
        cache = _THREAD_WORKERS.cache = OrderedDict()
    worker = cache.get(config_json)
    if worker is None:
        with _BUILD_LOCK:
            worker = cache[config_json] = _build_worker(config_json)
        while len(cache) > WORKERS_PER_THREAD:
            cache.popitem(last=False)
    cache.move_to_end(config_json)
    return worker


def _build_worker(config_json: str) -> Worker:
    cfg = _parsed(config_json)
    device = task.compute_device(cfg)
    model = task.build_model(cfg["model"], cfg["seed"]).to(device)
    return Worker(
        model=model,
        loss_fn=task.build_loss(cfg["dataset"]),
        spec=task.local_spec(cfg),
        algorithm=algorithms.get(cfg["algorithm"]["name"]),
        initial=curvature.flat_parameters(model).detach().clone(),
        classification=task.is_classification(cfg["dataset"]),
        device=device,
        tensors=dict(model.state_dict(keep_vars=True)),
        # The data's contents digest too: a process that outlives a run (in-process, tests) never serves a client
        # the tensors of files since replaced at the same path.
        data_key=json.dumps(
            [data_params(cfg), cfg.get("data_fingerprint"), cfg["num_clients"], cfg["seed"], str(device)],
            sort_keys=True,
        ),
    )


def load_weights(worker: Worker, arrays: ArrayRecord) -> None:
    """Copy the weights a message carries into the worker's model in place (every parameter and buffer is
    overwritten). Tensor by tensor when names and shapes match (the usual case: cheaper than ``load_state_dict``),
    else through ``load_state_dict``, which names what does not fit."""
    state = arrays.to_torch_state_dict()
    targets = worker.tensors
    if state.keys() != targets.keys() or any(state[k].shape != targets[k].shape for k in state):
        worker.model.load_state_dict(state)
        return
    with torch.no_grad():
        for name, value in state.items():
            targets[name].copy_(value)


def _setup_threads(cfg: dict[str, Any]) -> None:
    threads = max(1, int(cfg["client_cpus"]))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _receive(message: Message, context: Context) -> tuple[int, dict[str, Any], int, ClientData, Worker]:
    """What every handler starts from: (round, run config, client id, its data, the worker with the sent weights)."""
    record = message.content["config"]
    server_round, config_json = int(record["round"]), str(record["run-config"])
    cfg = _parsed(config_json)
    _setup_threads(cfg)
    cid = partition_id(context)
    worker = _worker(config_json)
    load_weights(worker, message.content["arrays"])
    return server_round, cfg, cid, _client_data(worker, cfg, cid), worker


class StateMissingError(RuntimeError):
    """The node does not hold the per-client state the server expects (e.g. a SuperNode restarted)."""


def client_state(
    message: Message, context: Context, worker: Worker, cid: int, *, evaluation: bool = False
) -> torch.Tensor | None:
    """The client's state ``[P]`` for a stateful algorithm (None otherwise): the one the message carries, else the
    node's own if it is of the round the server expects, else — the client never trained — its initial one, or for
    an ``evaluation`` the algorithm's :meth:`~perfedavg.algorithms.base.Algorithm.unsampled_state` (Ditto: the
    global model the message carries, which the worker's model holds)."""
    if not worker.algorithm.stateful:
        return None
    expected = int(message.content["config"]["state-round"])
    if "state" in message.content:
        return unpack_state(message.content["state"], worker.initial.device)
    held = int(context.state[STATE_ROUND]["round"]) if STATE_ROUND in context.state else 0
    if STATE_ARRAYS in context.state and held == expected:
        return unpack_state(context.state[STATE_ARRAYS], worker.initial.device)
    if expected == 0 and evaluation:
        return worker.algorithm.unsampled_state(worker.initial, curvature.flat_parameters(worker.model).detach())
    if expected == 0:
        return worker.algorithm.initial_state(worker.initial)
    raise StateMissingError(
        f"client {cid} holds no {worker.spec.algorithm} state of round {expected} (its node has "
        f"{'round ' + str(held) if STATE_ARRAYS in context.state else 'none'}); the server resends it"
    )


def stability_probe(
    cfg: dict[str, Any], server_round: int, cid: int, data: ClientData, worker: Worker, *, evaluation: bool = False
) -> dict[str, float]:
    """The stability monitor's reply fields where this round is probed (``stability.every``, or every round with
    ``stability.safeguard``) and the algorithm reads it: λ_max of one minibatch Hessian at the model's current
    (received) weights and the seconds it took; else nothing. Draws from its own generator: the training that
    follows is the same bit for bit (unless the safeguard then changes its α: :func:`guarded_spec`). ``evaluation``:
    for an evaluation, which probes only for the safeguard (its personalization step is guarded like training's)."""
    monitor = cfg.get("stability", {})
    every = stability.probe_every(monitor.get("every"), worker.spec.hessian)
    due = monitor.get("safeguard") is not None or (not evaluation and every > 0 and server_round % every == 0)
    if not due or "stability.every" not in algorithms.reads(worker.spec.algorithm):
        return {}
    start = time.perf_counter()
    generator = stability.probe_generator(cfg["seed"], cid, server_round)
    batch = algorithms.sample_batch(data.x_train, data.y_train, worker.spec.batch_size, generator)
    value = stability.sharpness(worker.model, worker.loss_fn, batch, int(monitor["iterations"]), seed=server_round)
    return {stability.REPLY_KEY: value, stability.REPLY_SECONDS: time.perf_counter() - start}


def guarded_spec(cfg: dict[str, Any], spec: algorithms.LocalSpec, probed: dict[str, float]) -> algorithms.LocalSpec:
    """``spec`` with the safeguard's inner step ``min(α, c / λ_max)`` where ``stability.safeguard`` is c (an
    extension beyond the paper, docs/curvature.md#stability); ``spec`` itself otherwise."""
    c = cfg.get("stability", {}).get("safeguard")
    if c is None or stability.REPLY_KEY not in probed:
        return spec
    alpha = stability.guarded_alpha(spec.alpha, probed[stability.REPLY_KEY], float(c))
    return spec if alpha == spec.alpha else dataclasses.replace(spec, alpha=alpha)


def train(message: Message, context: Context) -> Message:
    """Local update from the global weights; reply with the new weights, training metrics and, for a stateful
    algorithm, the client's new state (also kept in ``context.state``)."""
    start = time.perf_counter()
    server_round, cfg, cid, data, worker = _receive(message, context)
    model = worker.model
    every = int(cfg.get("diagnostics", {}).get("every", 0))
    probed = stability_probe(cfg, server_round, cid, data, worker)  # at the received weights, before training
    spec = guarded_spec(cfg, worker.spec, probed)
    if spec is not worker.spec:
        probed[stability.REPLY_ALPHA] = spec.alpha
    result = worker.algorithm.local_update(
        model,
        worker.loss_fn,
        data.x_train,
        data.y_train,
        spec,
        client_generator(cfg["seed"], cid, server_round),
        state=client_state(message, context, worker, cid),
        diagnose=every > 0 and server_round % every == 0,  # only Per-FedAvg has a meta-step to measure
    )
    metrics = MetricRecord(
        {
            "client-id": cid,
            "num-examples": result.num_examples,
            "train-loss": result.train_loss,
            "curvature-s": result.curvature_s,
            **{diagnostics.TAG_PREFIX + k: v for k, v in result.diagnostics.items()},
            **({"diagnostics-s": result.diagnostics_s} if result.diagnostics else {}),
            **probed,
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    if result.state is not None:
        content["state"] = context.state[STATE_ARRAYS] = pack_state(result.state)
        context.state[STATE_ROUND] = ConfigRecord({"round": server_round})
    metrics["compute-s"] = time.perf_counter() - start  # the whole handler: data, model, update, encoding
    return Message(content=content, reply_to=message)


def evaluate(message: Message, context: Context) -> Message:
    """Global and personalized metrics of the received weights on the run's ``eval_split`` (the client's test split,
    or its validation split when tuning); the algorithm personalizes (:meth:`Algorithm.evaluate`)."""
    start = time.perf_counter()
    server_round, cfg, cid, data, worker = _receive(message, context)
    x_eval, y_eval = data.eval_split(cfg["eval_split"])
    spec = guarded_spec(cfg, worker.spec, stability_probe(cfg, server_round, cid, data, worker, evaluation=True))
    metrics = worker.algorithm.evaluate(
        worker.model,
        worker.loss_fn,
        (data.x_train, data.y_train),
        (x_eval, y_eval),
        spec,
        classification=worker.classification,
        state=client_state(message, context, worker, cid, evaluation=True),
    )
    record = MetricRecord(
        {"client-id": cid, "num-examples": int(y_eval.shape[0]), **metrics, "compute-s": time.perf_counter() - start}
    )
    return Message(content=RecordDict({"metrics": record}), reply_to=message)


def query(message: Message, context: Context) -> Message:
    """Tell the server which partition (client id) this node serves."""
    return Message(
        content=RecordDict({"info": ConfigRecord({"partition-id": partition_id(context)})}), reply_to=message
    )


def build_client_app(mods: list | None = None) -> ClientApp:
    """The ClientApp with its train/evaluate/query handlers (``mods`` wrap them, e.g. for fault injection)."""
    client = ClientApp(mods=mods)
    client.train()(train)
    client.evaluate()(evaluate)
    client.query()(query)
    return client


app = build_client_app()
