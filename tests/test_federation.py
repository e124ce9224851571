"""The server loop and client app together: in-process (fast) and through Flower's simulation engine (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from flwr.app import Context, Message
from support import ANN_SMALL, federate, without_times

from perfedavg.engines.client_app import app as client_app
from perfedavg.engines.client_app import build_client_app
from perfedavg.engines.inprocess_grid import InProcessGrid
from perfedavg.federation import FederationError
from perfedavg.federation.round_math import aggregate, sample_clients
from perfedavg.run.runner import compose, prepare, run


def test_exact_and_hvp_give_the_same_rounds_and_fo_differs(tmp_path: Path) -> None:
    runs = {m: federate([*ANN_SMALL, f"hessian={m}"], tmp_path / m)["rounds"] for m in ("exact", "hvp", "fo")}
    keys = ["train/loss", "eval/global_loss", "eval/personalized_loss"]
    for a, b in zip(runs["exact"], runs["hvp"]):
        for k in keys:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), k
    assert any(
        abs(a["eval/personalized_loss"] - b["eval/personalized_loss"]) > 1e-4 for a, b in zip(runs["hvp"], runs["fo"])
    )


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path: Path) -> None:
    a = federate([*ANN_SMALL, "hessian=fd"], tmp_path / "a")["rounds"]
    b = federate([*ANN_SMALL, "hessian=fd"], tmp_path / "b")["rounds"]
    c = federate([*ANN_SMALL, "hessian=fd", "seed=1"], tmp_path / "c")["rounds"]
    assert without_times(a) == without_times(b)
    assert without_times(a) != without_times(c)


def test_personalization_beats_the_global_model_with_two_labels_per_client(tmp_path: Path) -> None:
    """Per-FedAvg's claim where clients differ most (2 labels each), on a short run: personalized accuracy far
    above global accuracy."""
    final = federate(["num_rounds=5", "partition=pathological", "beta=0.1"], tmp_path)["final"]
    assert final["eval/personalized_acc"] > final["eval/global_acc"] + 0.2


def test_rounds_sample_the_configured_share_and_record_metrics(tmp_path: Path) -> None:
    summary = federate(["num_clients=10", "num_rounds=3", "fraction=0.3", "eval_every=2", "local_steps=1"], tmp_path)
    rounds = summary["rounds"]
    assert [r["clients/trained"] for r in rounds] == [3, 3, 3]
    assert ["eval/personalized_acc" in r for r in rounds] == [False, True, True]  # every 2nd round and the last
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["final"] == summary["final"] and len(saved["rounds"]) == 3


def failing_on(client_ids: set[int]):
    def mod(message: Message, context: Context, call_next):
        if int(context.node_config["partition-id"]) in client_ids and message.metadata.message_type == "train":
            raise RuntimeError(f"injected failure on client {context.node_config['partition-id']}")
        return call_next(message, context)

    return mod


def test_a_failing_client_is_counted_and_the_round_goes_on(tmp_path: Path, caplog) -> None:
    app = build_client_app(mods=[failing_on({1})])
    summary = federate([*ANN_SMALL, "fraction=1.0"], tmp_path, app)
    assert [r["clients/failed"] for r in summary["rounds"]] == [1, 1, 1]
    assert [r["clients/trained"] for r in summary["rounds"]] == [3, 3, 3]
    assert summary["client_failures"] == 3
    assert "client 1 failed in training" in caplog.text and "injected failure" in caplog.text


def test_every_client_failing_stops_the_run_with_a_clear_error(tmp_path: Path) -> None:
    app = build_client_app(mods=[failing_on({0, 1, 2, 3})])
    with pytest.raises(FederationError, match=r"round 1: all 4 sampled clients failed.*injected failure"):
        federate([*ANN_SMALL, "fraction=1.0"], tmp_path, app)


def test_a_round_below_min_clients_stops_the_run(tmp_path: Path) -> None:
    app = build_client_app(mods=[failing_on({1})])
    with pytest.raises(FederationError, match=r"round 1: 1 of 4 sampled clients failed, 3 succeeded \(min_clients=4\)"):
        federate([*ANN_SMALL, "fraction=1.0", "min_clients=4"], tmp_path, app)
    assert federate([*ANN_SMALL, "fraction=1.0", "min_clients=3"], tmp_path / "ok", app)["client_failures"] == 3


def test_sampling_and_aggregation_rules() -> None:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    assert len(sample_clients(rng, 20, 0.5)) == 10
    assert len(sample_clients(rng, 20, 0.01)) == 1  # at least one
    assert sample_clients(np.random.default_rng(3), 20, 0.5) == sample_clients(np.random.default_rng(3), 20, 0.5)
    a, b = {"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([4.0, 6.0])}
    assert torch.equal(aggregate([a, b], [1, 1])["w"], torch.tensor([2.0, 4.0]))
    assert torch.allclose(aggregate([a, b], [3, 1])["w"], torch.tensor([1.0, 3.0]))


def test_weighted_aggregation_differs_from_uniform_when_sizes_differ(tmp_path: Path) -> None:
    common = ["num_clients=6", "num_rounds=2", "fraction=1.0", "local_steps=2", "partition.classes_per_client=3"]
    uni = federate([*common, "aggregation=uniform"], tmp_path / "u")["final"]
    wei = federate([*common, "aggregation=weighted"], tmp_path / "w")["final"]
    assert uni["eval/global_loss"] != wei["eval/global_loss"]


@pytest.mark.slow
def test_metrics_do_not_depend_on_the_engine_or_the_number_of_actors(tmp_path: Path) -> None:
    """Same config and seed: Ray with 2 actors, Ray with 1 actor and the in-process grid agree exactly (4 clients
    per round, so the order in which replies arrive would show in the sums if it leaked). The ANN's small matrix
    products give the same bits with 1 or 2 threads (a convolution's do not, so the Net cannot show this). The Ray
    run's TensorBoard scalars are read back from disk too (a real federation through Flower's simulation engine)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = [*ANN_SMALL, "hessian=hvp", "fraction=1.0"]
    summary = run(compose(overrides), tmp_path / "ray2")
    one_actor = without_times(run(compose([*overrides, "client_cpus=2"]), tmp_path / "ray1")["rounds"])
    local = without_times(federate(overrides, tmp_path / "local")["rounds"])
    assert without_times(summary["rounds"]) == one_actor == local
    assert summary["client_failures"] == 0
    acc = EventAccumulator(str(tmp_path / "ray2"), size_guidance={"scalars": 0, "histograms": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    rounds = list(range(1, len(summary["rounds"]) + 1))
    for tag in ("train/loss", "eval/global_loss", "eval/personalized_loss", "time/round_s", "time/curvature_s"):
        assert tag in tags, tag
        assert [e.step for e in acc.Scalars(tag)] == rounds, tag
        assert all(math.isfinite(e.value) for e in acc.Scalars(tag))
    assert acc.Scalars("eval/personalized_loss")[-1].value == pytest.approx(summary["final"]["eval/personalized_loss"])
    assert "eval/personalized_loss_per_client" in acc.Tags()["histograms"]
    assert not any(tag.startswith("hparams/") for tag in tags)  # HPARAMS reads the real tags, no copies


def poisoning(client_id: int):
    """A mod that replaces one client's trained weights with NaNs (a diverged client)."""
    import torch
    from flwr.app import ArrayRecord

    def mod(message: Message, context: Context, call_next):
        reply = call_next(message, context)
        if int(context.node_config["partition-id"]) == client_id and message.metadata.message_type == "train":
            state = reply.content["arrays"].to_torch_state_dict()
            reply.content["arrays"] = ArrayRecord({k: torch.full_like(v, float("nan")) for k, v in state.items()})
        return reply

    return mod


def test_a_non_finite_update_is_excluded_and_counted(tmp_path: Path, caplog) -> None:
    clean = federate([*ANN_SMALL, "fraction=1.0"], tmp_path / "clean")
    poisoned = federate([*ANN_SMALL, "fraction=1.0"], tmp_path / "poisoned", build_client_app(mods=[poisoning(2)]))
    assert [r["clients/failed"] for r in poisoned["rounds"]] == [1, 1, 1]
    assert [r["clients/non_finite"] for r in poisoned["rounds"]] == [1, 1, 1]
    assert [r["clients/non_finite"] for r in clean["rounds"]] == [0, 0, 0]
    assert poisoned["client_failures"] == 3
    assert all(math.isfinite(v) for v in poisoned["final"].values())
    assert poisoned["final"] != clean["final"]  # the average is over the three healthy clients
    assert "client 2 sent a non-finite update; excluded" in caplog.text


def test_each_client_is_built_once_per_process_across_rounds(tmp_path: Path) -> None:
    from perfedavg.engines.client_app import CLIENTS

    CLIENTS.clear()
    builds = CLIENTS.builds
    summary = federate(["num_clients=6", "num_rounds=4", "fraction=0.5", "local_steps=1"], tmp_path)
    assert summary["rounds"][-1]["clients/trained"] == 3
    assert CLIENTS.builds - builds == 6  # sampled again and again, evaluated every round: built once each


def test_device_auto_on_a_cpu_machine_equals_device_cpu(tmp_path: Path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    auto = federate([*ANN_SMALL, "device=auto"], tmp_path / "auto")["rounds"]
    cpu = federate([*ANN_SMALL, "device=cpu"], tmp_path / "cpu")["rounds"]
    assert without_times(auto) == without_times(cpu)


@pytest.mark.parametrize(
    ("overrides", "cuda", "message"),
    [
        (["device=cuda"], False, "device=cuda: no CUDA GPU is visible to PyTorch"),
        (["client_gpus=0.5"], False, "client_gpus=0.5: no CUDA GPU is visible to PyTorch"),
        (["client_gpus=0.5", "device=cpu"], True, "client_gpus=0.5 with device=cpu"),
        (["device=cuda", "backend=ray"], True, "device=cuda with backend=ray needs client_gpus > 0"),
    ],
)
def test_device_settings_that_cannot_work_are_refused_before_the_run(overrides, cuda, message, monkeypatch) -> None:
    import torch

    from perfedavg.config import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with pytest.raises(ConfigError, match=message):
        prepare(compose(["experiment=smoke", *overrides]))


def test_gpu_shares_reach_ray_as_client_resources() -> None:
    from perfedavg.run.runner import backend_config

    cfg = prepare(compose(["experiment=smoke", "device=cpu"]))
    assert backend_config({**cfg, "client_gpus": 0.25})["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.25}


def poisoning_evaluation(client_id: int):
    """A mod that makes one client's evaluation report an infinite personalized loss (as an overflowing α step)."""

    def mod(message: Message, context: Context, call_next):
        reply = call_next(message, context)
        if int(context.node_config["partition-id"]) == client_id and message.metadata.message_type == "evaluate":
            reply.content["metrics"]["personalized_loss"] = math.inf
        return reply

    return mod


def test_non_finite_evaluation_metrics_are_logged_and_the_run_goes_on(tmp_path: Path, caplog) -> None:
    """The rule: log them as they are (the mean is inf), histogram the finite values, count the clients, go on."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    app = build_client_app(mods=[poisoning_evaluation(1)])
    summary = federate([*ANN_SMALL, "fraction=1.0"], tmp_path, app)
    rounds = summary["rounds"]
    assert len(rounds) == 3 and all(r["eval/personalized_loss"] == math.inf for r in rounds)
    assert [r["clients/eval_non_finite"] for r in rounds] == [1, 1, 1]
    assert [r["clients/evaluated"] for r in rounds] == [4, 4, 4]
    assert all(math.isfinite(r["eval/global_loss"]) for r in rounds)
    assert "round 3: non-finite evaluation metrics from clients [1]" in caplog.text
    acc = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0}).Reload()
    assert [h.histogram_value.num for h in acc.Histograms("eval/personalized_loss_per_client")] == [3, 3, 3]


def test_the_exact_modes_memory_budget_is_shared_among_the_clients_computing_at_once(monkeypatch) -> None:
    """Net on digits needs 1.74 GB: a 3 GB budget fits one client at a time (in-process with one worker, or Ray with
    client_cpus=4 on 4 CPUs), not 4 Ray actors or 4 in-process threads at once; each client's own check uses the same
    share."""
    from perfedavg import task
    from perfedavg.config import ConfigError

    monkeypatch.setattr(task, "available_cpus", lambda: 4)
    exact = ["hessian=exact", "hessian.max_memory_gb=3"]
    for four_at_once in (["client_cpus=1"], ["backend=inprocess", "inprocess_workers=4"]):
        with pytest.raises(ConfigError, match=r"1.74 GB .* budget of 0.75 GB per client; hessian.max_memory_gb = 3.00"):
            prepare(compose([*exact, *four_at_once]))
    for fine in (["backend=inprocess", "inprocess_workers=1"], ["client_cpus=4"]):
        cfg = prepare(compose([*exact, *fine]))
        assert task.local_spec(cfg).max_memory_gb == 3.0
    two_at_once = {"backend": "ray", "client_cpus": 2, "hessian": {"max_memory_gb": 3.0}}
    assert task.concurrent_clients(two_at_once) == 2 and task.hessian_budget_gb(two_at_once) == 1.5


def test_the_round_line_shows_an_eta_once_a_minute_or_more_remains() -> None:
    from perfedavg.federation.console import eta_seconds, progress_line

    m = {"train/loss": 1.0, "clients/trained": 10, "time/round_s": 2.0}
    assert eta_seconds([30.0], 1, 100) is None  # the first round pays start-up: no estimate from it alone
    assert eta_seconds([30.0, 2.0, 4.0], 3, 100) == 3.0 * 97  # the mean without the first round, times rounds left
    assert eta_seconds([5.0, 0.4], 2, 30) is None  # 11 s left: not shown
    assert eta_seconds([5.0, 2.0], 100, 100) is None
    assert progress_line(3, 100, m, eta_seconds([30.0, 2.0, 4.0], 3, 100)).endswith("| 2.00 s | ETA 5m")
    assert progress_line(3, 100, m, 3 * 3600 + 5 * 60).endswith("| ETA 3h05m")
    assert "ETA" not in progress_line(2, 30, m, eta_seconds([5.0, 0.4], 2, 30))


def test_a_simulation_short_of_num_clients_nodes_stops_after_the_simulation_wait(monkeypatch, tmp_path: Path) -> None:
    """Flower's in-memory (simulation) grid has every node registered as it starts, so fewer than num_clients is a
    mistake caught after SIMULATION_NODE_WAIT_S (10 s); other grids (SuperNodes over the network) get 120 s."""
    import time

    from flwr.superlink.grid import InMemoryGrid

    from perfedavg.federation import clients
    from perfedavg.federation.transport import PollingTransport

    class TwoNodes(InMemoryGrid):
        def __init__(self) -> None:  # no SuperLink state: only the node list is read
            pass

        def get_node_ids(self):
            return [7, 8]

    monkeypatch.setattr(clients, "SIMULATION_NODE_WAIT_S", 0.5)
    cfg = prepare(compose(["model=ann", "dataset=regression", "num_clients=4"]))
    started = time.monotonic()
    with pytest.raises(FederationError, match=r"only 2 of num_clients=4 client nodes \(SuperNodes, one per client\)"):
        clients.ClientChannel(TwoNodes(), PollingTransport(), cfg).discover()
    assert 0.5 <= time.monotonic() - started < 5
    # the simulation's own in-memory grid waits the simulation's time; any other grid (a deployment) its own
    from flwr.superlink.grid import InMemoryGrid

    assert clients.node_wait_s(InMemoryGrid.__new__(InMemoryGrid)) == 0.5
    assert clients.node_wait_s(InProcessGrid(client_app, 4)) == clients.DEPLOYMENT_NODE_WAIT_S


def refusing_queries(message: Message, context: Context, call_next):
    """A mod under which a node cannot answer the server's query for its client id."""
    if message.metadata.message_type == "query":
        raise RuntimeError("injected: no query answers")
    return call_next(message, context)


@pytest.mark.slow
def test_under_ray_clients_are_mapped_to_nodes_without_a_message_per_node(tmp_path: Path) -> None:
    """The simulation engine's own node → partition mapping replaces the query messages (each an actor call: minutes
    at 10,000 clients): a client app that cannot answer them still runs under Ray, and fails in-process, where the
    server has to ask."""
    app = build_client_app(mods=[refusing_queries])
    summary = run(compose([*ANN_SMALL, "num_rounds=2"]), tmp_path / "ray", client_app=app)
    assert summary["client_failures"] == 0 and len(summary["rounds"]) == 2
    with pytest.raises(FederationError, match="failed to report its client id: .*injected: no query answers"):
        federate([*ANN_SMALL, "num_rounds=2"], tmp_path / "local", app)


def test_the_engines_node_mapping_is_used_only_when_it_knows_every_node() -> None:
    from perfedavg.engines import sim_engine

    sim_engine._node_partitions.clear()
    sim_engine._node_partitions.update({11: 0, 12: 1})
    try:
        assert sim_engine.node_partitions([12, 11]) == {12: 1, 11: 0}
        assert sim_engine.node_partitions([11, 13]) is None  # a node it does not know: ask the nodes
        assert sim_engine.node_partitions([]) is None
    finally:
        sim_engine._node_partitions.clear()


class CountingState:
    """A link state holding messages per node, counting the nodes the pickup loop asks about."""

    def __init__(self) -> None:
        self.inbox: dict[int, list] = {}
        self.asked: list[int] = []

    def get_message_ins(self, node_id: int, limit: int | None) -> list:
        self.asked.append(node_id)
        box = self.inbox.get(node_id, [])
        got, self.inbox[node_id] = box[:limit], box[limit:]
        return got


class PushingGrid:
    """A grid whose pushes land in a CountingState and whose replies never come (exchange times out at once)."""

    def __init__(self, state: CountingState) -> None:
        self.state = state

    def push_messages(self, messages) -> list[str]:  # noqa: ANN001
        for m in messages:
            self.state.inbox.setdefault(m.metadata.dst_node_id, []).append(m)
        return [f"id-{m.metadata.dst_node_id}" for m in messages]

    def pull_messages(self, ids) -> list:  # noqa: ANN001
        return []


def test_the_pickup_loop_looks_only_at_the_nodes_the_server_pushed_to() -> None:
    """With 5,000 nodes, the event-driven pickup loop asks the link state about the nodes exchange() pushed to (each
    look-up walks every stored message: asking every node cost seconds a round at 10,000 clients), still hands over
    every message, one per node per scan as Flower does, and scans every node for a server that pushes otherwise."""
    import threading
    import time
    from queue import Queue
    from types import SimpleNamespace

    from perfedavg.engines import sim_engine

    nodes = {node: node - 100 for node in range(100, 5_100)}
    state, queue, stop = CountingState(), Queue(), threading.Event()
    sim_engine._targeted.clear()
    loop = threading.Thread(target=sim_engine._add_messages_to_queue, args=(state, queue, nodes, stop), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while len(state.asked) < len(nodes) and time.monotonic() < deadline:  # not targeted yet: Flower's full scan
            time.sleep(0.01)
        assert set(state.asked) == set(nodes)
        message = lambda node: SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node))  # noqa: E731
        pushed = [message(n) for n in (150, 4_000, 4_000, 777)]  # node 4,000 gets two messages
        sim_engine.exchange(PushingGrid(state), pushed, timeout=0.0)
        got = [queue.get(timeout=5).metadata.dst_node_id for _ in pushed]
        assert sorted(got) == [150, 777, 4_000, 4_000]
        state.asked.clear()
        time.sleep(0.35)  # three more fallback periods without a push
        assert set(state.asked) <= {150, 777, 4_000}  # no full scan once the server pushes through exchange()
        assert queue.empty()
    finally:
        stop.set()
        sim_engine._messages_pushed.set()
        loop.join(timeout=5)
        sim_engine._targeted.clear()
        sim_engine._pushed_nodes.clear()
