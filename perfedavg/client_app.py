"""Flower ClientApp: Message ↔ torch. All algorithmic work is in :mod:`perfedavg.algorithm`.

Each message carries the global weights (``ArrayRecord`` "arrays") and a ``ConfigRecord`` "config" holding the
round number and the whole resolved run configuration as JSON, so the same app serves the simulation engine and
the Deployment Engine without any other channel. A client's identity is its ``partition-id`` (node config); its
data is built once per process and reused across rounds.
"""

from __future__ import annotations

import functools
import json
import time
import zlib
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from perfedavg import algorithm, task
from perfedavg.data import ClientData, data_params, load_client


def run_config(message: Message) -> tuple[int, dict[str, Any]]:
    """The round number and the resolved run configuration carried by a message."""
    record = message.content["config"]
    return int(record["round"]), json.loads(str(record["run-config"]))


def partition_id(context: Context) -> int:
    return int(context.node_config["partition-id"])


@functools.lru_cache(maxsize=8)
def _client_data(dataset_json: str, client_id: int, num_clients: int, seed: int) -> ClientData:
    return load_client(json.loads(dataset_json), client_id, num_clients, seed)


def client_data(cfg: dict[str, Any], client_id: int) -> ClientData:
    """This client's data, built once per process (cached on the data set's parameters)."""
    return _client_data(json.dumps(data_params(cfg), sort_keys=True), client_id, cfg["num_clients"], cfg["seed"])


def client_generator(seed: int, client_id: int, server_round: int) -> torch.Generator:
    """Minibatch randomness that depends only on (seed, client, round), never on which worker runs the client."""
    key = f"{seed}/{client_id}/{server_round}".encode()
    return torch.Generator().manual_seed(zlib.crc32(key) * 2**20 + seed)


@functools.lru_cache(maxsize=4)
def _model(model_json: str, seed: int) -> torch.nn.Module:
    return task.build_model(json.loads(model_json), seed)


def _model_from(message: Message, cfg: dict[str, Any]) -> torch.nn.Module:
    """This process's model for the configured architecture, holding the weights the message carries.

    One module per process is reused across messages (building one costs more than loading weights into it, and
    the BackPACK cache of ``hessian=diag`` stays warm); every handler overwrites all of its parameters first.
    """
    model = _model(json.dumps(cfg["model"], sort_keys=True), cfg["seed"])
    model.load_state_dict(message.content["arrays"].to_torch_state_dict())
    return model


def _setup_threads(cfg: dict[str, Any]) -> None:
    threads = max(1, int(cfg["client_cpus"]))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def local_spec(cfg: dict[str, Any]) -> algorithm.LocalSpec:
    return algorithm.LocalSpec(
        algorithm=cfg["algorithm"]["name"],
        hessian=cfg["hessian"]["mode"],
        alpha=cfg["alpha"],
        beta=cfg["beta"],
        delta=cfg["delta"],
        local_steps=cfg["local_steps"],
        batch_size=cfg["batch_size"],
        max_memory_gb=cfg["hessian"].get("max_memory_gb"),
    )


def _receive(message: Message, context: Context) -> tuple[int, dict[str, Any], int, ClientData, torch.nn.Module]:
    """What every handler starts from: (round, run config, client id, its data, the model with the sent weights)."""
    server_round, cfg = run_config(message)
    _setup_threads(cfg)
    cid = partition_id(context)
    return server_round, cfg, cid, client_data(cfg, cid), _model_from(message, cfg)


def train(message: Message, context: Context) -> Message:
    """Local update from the global weights; reply with the new weights and training metrics."""
    start = time.perf_counter()
    server_round, cfg, cid, data, model = _receive(message, context)
    result = algorithm.local_update(
        model,
        task.build_loss(cfg["dataset"]),
        data.x_train,
        data.y_train,
        local_spec(cfg),
        client_generator(cfg["seed"], cid, server_round),
    )
    metrics = MetricRecord(
        {
            "client-id": cid,
            "num-examples": result.num_examples,
            "train-loss": result.train_loss,
            "curvature-s": result.curvature_s,
        }
    )
    arrays = ArrayRecord(model.state_dict())
    metrics["compute-s"] = time.perf_counter() - start  # the whole handler: data, model, update, encoding
    return Message(content=RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=message)


def evaluate(message: Message, context: Context) -> Message:
    """Global and personalized (α-step on the training split) test metrics of the received weights."""
    start = time.perf_counter()
    _, cfg, cid, data, model = _receive(message, context)
    metrics = algorithm.personalized_evaluation(
        model,
        task.build_loss(cfg["dataset"]),
        data.x_train,
        data.y_train,
        data.x_test,
        data.y_test,
        alpha=cfg["alpha"],
        adapt_steps=cfg["adapt_steps"],
        classification=task.is_classification(cfg["dataset"]),
    )
    record = MetricRecord(
        {"client-id": cid, "num-examples": data.num_test, **metrics, "compute-s": time.perf_counter() - start}
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
