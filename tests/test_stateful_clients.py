"""pFedMe and Ditto in the federation (issue 23): both run through the same loop and ClientApp as FedAvg and
Per-FedAvg; Ditto's personal models live in each node's ``Context.state`` across rounds, survive a dead Ray worker,
are resent after a node loses them, and round-trip through checkpoints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message
from support import ANN_SMALL, federate, without_times

from perfedavg import (
    algorithms,
    checkpoint,
    curvature,
    task,
)
from perfedavg.algorithms import LocalSpec, ditto, fedavg
from perfedavg.algorithms.pfedme import PFedMe
from perfedavg.config import ConfigError
from perfedavg.engines.client_app import build_client_app
from perfedavg.engines.inprocess_grid import InProcessGrid
from perfedavg.federation.record import run_and_record
from perfedavg.federation.state_records import STATE_ARRAYS, STATE_ROUND, unpack_state
from perfedavg.run.runner import compose, prepare, run
from perfedavg.testing.faults import Fault, faulty_client_app

ALL_CLIENTS = [*ANN_SMALL, "fraction=1.0", "num_rounds=4"]


def column(summary: dict, key: str) -> list[float]:
    return [r[key] for r in summary["rounds"] if key in r]


# -- the algorithms behind the interface -------------------------------------------------------------------------------


def test_dittos_global_model_is_fedavgs_and_its_personal_steps_follow_on_the_same_draws() -> None:
    torch.manual_seed(0)
    model, loss_fn = torch.nn.Linear(3, 2).double(), torch.nn.MSELoss()
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randn(30, 2, dtype=torch.float64)
    spec = LocalSpec(algorithm="ditto", alpha=0.05, beta=0.1, local_steps=4, batch_size=8, options={"lam": 0.5})
    w0 = curvature.flat_parameters(model)
    v0 = w0 + 0.3
    result = ditto.Ditto().local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(7), state=v0)
    assert torch.equal(curvature.flat_parameters(model), result.weights)  # the model holds the weights sent back

    gen = torch.Generator().manual_seed(7)
    w, _ = fedavg.sgd(model, loss_fn, x, y, w0, 0.1, spec, gen)
    curvature.set_flat_parameters(model, w0)
    v, _ = ditto.personal_update(
        model, loss_fn, x, y, v0, w0, lam=0.5, eta=0.05, steps=4, batch_size=8, generator=gen
    )  # fmt: skip
    assert torch.equal(result.weights, w) and torch.equal(result.state, v)
    assert not torch.equal(result.state, result.weights)


def test_pfedme_server_update_mixes_the_average_with_the_previous_global_model() -> None:
    previous, averaged = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, -2.0])}
    mixed = PFedMe().server_update(previous, averaged, LocalSpec(algorithm="pfedme", options={"server_mix": 2.0}))
    assert torch.allclose(mixed["w"], torch.tensor([5.0, -6.0]))  # (1 − 2)·previous + 2·average
    assert (
        PFedMe().server_update(previous, averaged, LocalSpec(algorithm="pfedme", options={"server_mix": 1.0}))
        is averaged
    )


# -- in the federation -------------------------------------------------------------------------------------------------


def test_ditto_trains_the_global_model_exactly_as_fedavg_and_evaluates_the_personal_ones(tmp_path: Path) -> None:
    runs = {
        a: federate([*ALL_CLIENTS, f"algorithm={a}", "algorithm.lam=0.01"], tmp_path / a) for a in ("fedavg", "ditto")
    }
    for key in ("train/loss", "eval/global_loss"):
        assert column(runs["ditto"], key) == column(runs["fedavg"], key), key
    personal = column(runs["ditto"], "eval/personalized_loss")
    assert personal != column(runs["fedavg"], "eval/personalized_loss")
    # Near-local training (small λ) on heterogeneous regression tasks: the personal models fit their own clients.
    assert personal[-1] < runs["ditto"]["final"]["eval/global_loss"]


def test_pfedme_runs_and_its_server_mix_changes_the_global_model(tmp_path: Path) -> None:
    args = [*ALL_CLIENTS, "algorithm=pfedme", "algorithm.lam=2", "alpha=0.02", "beta=0.1"]
    plain = federate(args, tmp_path / "plain")
    mixed = federate([*args, "algorithm.server_mix=1.5"], tmp_path / "mixed")
    assert all(math.isfinite(v) for v in plain["final"].values())
    assert column(plain, "train/loss")[0] == column(mixed, "train/loss")[0]  # same first round, then the mix acts
    assert column(plain, "eval/global_loss") != column(mixed, "eval/global_loss")
    assert plain["final"]["eval/personalized_loss"] != plain["final"]["eval/global_loss"]


def test_ditto_state_lives_in_each_nodes_context_and_in_the_checkpoint(tmp_path: Path) -> None:
    cfg = prepare(compose([*ANN_SMALL, "algorithm=ditto", "num_rounds=4"]))
    grid = InProcessGrid(build_client_app(), cfg["num_clients"])
    run_and_record(grid, cfg, tmp_path)
    saved = checkpoint.load(tmp_path)
    assert saved["client_states"] and set(saved["client_states"]) == set(saved["state_rounds"])
    for cid, state in saved["client_states"].items():
        context = grid.contexts[min(grid.contexts) + cid]
        assert int(context.state[STATE_ROUND]["round"]) == saved["state_rounds"][cid]
        assert torch.equal(unpack_state(context.state[STATE_ARRAYS]), state)
    untrained = set(range(cfg["num_clients"])) - set(saved["client_states"])
    for cid in untrained:  # never sampled for training: no state anywhere (Ditto evaluates it with the global model)
        assert STATE_ARRAYS not in grid.contexts[min(grid.contexts) + cid].state


def test_a_node_that_loses_its_state_fails_once_and_is_sent_it_again(tmp_path: Path, caplog) -> None:
    """A SuperNode that restarts loses its Context.state: its client fails that round (it cannot train on the wrong
    personal model), and the server sends the state with the next message."""

    def forget(message: Message, context: Context, call_next):
        kind, cid = message.metadata.message_type, int(context.node_config["partition-id"])
        if kind == "train" and cid == 1 and int(message.content["config"]["round"]) == 3:
            context.state.clear()
        return call_next(message, context)

    summary = federate([*ALL_CLIENTS, "algorithm=ditto", "num_rounds=5"], tmp_path, build_client_app(mods=[forget]))
    assert column(summary, "clients/failed") == [0, 0, 1, 0, 0]
    assert column(summary, "clients/trained") == [4, 4, 3, 4, 4]
    assert "client 1 holds no ditto state of round 2 (its node has none); the server resends it" in caplog.text


def test_a_stateful_federation_that_would_not_fit_in_memory_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(curvature, "available_memory_bytes", lambda: 1000)
    with pytest.raises(ConfigError, match=r"algorithm=ditto keeps a personal model per client: num_clients=4 × "):
        prepare(compose([*ANN_SMALL, "algorithm=ditto"]))
    prepare(compose([*ANN_SMALL, "algorithm=pfedme"]))  # stateless: no per-client memory


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.lam=0", "algorithm.lam=0.0: must be a positive number"),
        ("algorithm.inner_steps=0", "algorithm.inner_steps=0: must be a positive integer"),
        ("algorithm.server_mix=-1", "algorithm.server_mix=-1.0: must be a positive number"),
    ],
)
def test_pfedme_keys_are_range_checked(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(compose(["algorithm=pfedme", override]))


def test_ditto_accepts_lambda_zero_and_refuses_a_negative_one() -> None:
    prepare(compose(["algorithm=ditto", "algorithm.lam=0"]))
    with pytest.raises(ConfigError, match=r"algorithm.lam=-1.0: must be ≥ 0"):
        prepare(compose(["algorithm=ditto", "algorithm.lam=-1"]))


@pytest.mark.slow
def test_ditto_under_ray_with_a_dead_worker_equals_the_in_process_run_with_a_failed_client(tmp_path: Path) -> None:
    """The worker serving client 1 dies in round 2 (Ray) / client 1 raises in round 2 (in-process): either way the
    client's personal model stays that of round 1, and every later round — which trains client 1 again from that
    state — agrees metric for metric. A state lost with the worker would show as a failure or another number."""
    args = [*ALL_CLIENTS, "algorithm=ditto", "algorithm.lam=0.1"]
    ray = run(compose(args), tmp_path / "ray", client_app=faulty_client_app(Fault("die", 1, 2)))
    local = federate(args, tmp_path / "local", faulty_client_app(Fault("raise", 1, 2)))
    assert column(ray, "clients/failed") == column(local, "clients/failed") == [0, 1, 0, 0]
    assert without_times(ray["rounds"]) == without_times(local["rounds"])


def test_task_local_spec_carries_the_algorithm_keys() -> None:
    cfg = prepare(compose(["algorithm=pfedme", "algorithm.lam=3", "algorithm.inner_steps=2", "adapt_steps=4"]))
    spec = task.local_spec(cfg)
    assert (spec.algorithm, dict(spec.options), spec.adapt_steps) == (
        "pfedme",
        {"lam": 3, "inner_steps": 2, "server_mix": 1},
        4,
    )


def test_the_fedavg_baselines_are_fedavg_and_fedavg_on_three_minibatches_worth_of_examples() -> None:
    torch.manual_seed(1)
    model, loss_fn = torch.nn.Linear(3, 2).double(), torch.nn.MSELoss()
    x, y = torch.randn(60, 3, dtype=torch.float64), torch.randn(60, 2, dtype=torch.float64)
    w0 = curvature.flat_parameters(model)

    def update(algorithm: str, batch_size: int) -> torch.Tensor:
        curvature.set_flat_parameters(model, w0)
        spec = LocalSpec(algorithm=algorithm, beta=0.1, local_steps=3, batch_size=batch_size)
        return algorithms.local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(2)).weights

    assert torch.equal(update("fedavg_ft", 8), update("fedavg", 8))
    assert torch.equal(update("fedavg_matched", 8), update("fedavg", 24))
    assert not torch.equal(update("fedavg_matched", 8), update("fedavg", 8))


@pytest.mark.parametrize("algorithm, served", [("ditto", "global"), ("local", "initial")])
def test_a_client_that_never_trained_is_evaluated_with_the_model_it_is_served(algorithm: str, served: str) -> None:
    """Ditto's client without a personal model yet is evaluated with the current global model (issue 34, item 5);
    Local's own model before its first round is the run's initial model."""
    import json

    from flwr.app import ArrayRecord, ConfigRecord, MessageType, RecordDict

    from perfedavg import task

    cfg = prepare(compose([*ANN_SMALL, f"algorithm={algorithm}"]))
    grid = InProcessGrid(build_client_app(), cfg["num_clients"])
    trained = task.build_model(cfg["model"], cfg["seed"] + 1).state_dict()  # a "global model" unlike the initial one
    config = ConfigRecord({"round": 3, "run-config": json.dumps(cfg), "state-round": 0})
    message = Message(
        RecordDict({"arrays": ArrayRecord(trained), "config": config}),
        dst_node_id=min(grid.contexts),
        message_type=MessageType.EVALUATE,
    )
    (reply,) = grid.send_and_receive([message])
    metrics = dict(reply.content["metrics"])
    if served == "global":
        assert metrics["personalized_loss"] == metrics["global_loss"]
    else:
        assert metrics["personalized_loss"] != metrics["global_loss"]
