#!/usr/bin/env python
"""What the simulation engine's message pickup costs against the federation's size: Flower's scan (``get_message_ins``
for every node, each look-up walking every stored message) against perfedavg's look at the nodes the server pushed
to (perfedavg/engines/sim_engine.py), with one round's messages stored in Flower's in-memory link state. Prints a table.

    .venv/bin/python scripts/bench_pickup.py [--sizes 50,1000,10000] [--messages 50]
"""

from __future__ import annotations

import argparse
import os
import time


def measure(n: int, messages: int) -> tuple[float, float]:
    """(seconds for a scan of every node, seconds for a look at the pushed nodes only), both finding every message."""
    from flwr.app import Message, RecordDict
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.proto.task_pb2 import Task  # pylint: disable=E0611
    from flwr.server.superlink.fleet.vce import vce_api
    from flwr.server.superlink.linkstate import LinkStateFactory
    from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
    from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.superlink.federation import NoOpFederationManager
    from flwr.superlink.grid import InMemoryGrid

    # the set-up of flwr.simulation.run_simulation, without the engine's threads
    factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    mapping = vce_api._register_nodes(num_nodes=n, state_factory=factory)
    state = factory.state()
    run = Run.create_empty(run_id=7)
    run.primary_task_id, run.federation_id = 11, NOOP_FEDERATION_ID
    state.run_ids[run.run_id] = RunRecord(run=run)
    state.task_store[11] = Task(task_id=11, run_id=run.run_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run.run_id, SUPERLINK_NODE_ID
    grid = InMemoryGrid(state_factory=factory)
    grid.set_run(run)
    sampled = list(mapping)[:: max(1, n // messages)][:messages]

    def push() -> None:
        grid.push_messages([Message(RecordDict(), dst_node_id=d, message_type="train") for d in sampled])

    push()
    t = time.perf_counter()
    found = sum(len(state.get_message_ins(node_id=d, limit=1)) for d in mapping)
    full = time.perf_counter() - t
    push()
    t = time.perf_counter()
    found_targeted = sum(len(state.get_message_ins(node_id=d, limit=1)) for d in sampled)
    targeted = time.perf_counter() - t
    assert found == found_targeted == len(sampled), (found, found_targeted)
    return full, targeted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="50,1000,10000", help="comma-separated numbers of nodes")
    parser.add_argument("--messages", type=int, default=50, help="messages stored (a round's sampled clients)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.messages} messages stored, one per sampled node\n")
    print("| nodes | scan of every node (Flower) | the pushed nodes only (perfedavg) |")
    print("|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        full, targeted = measure(n, args.messages)
        print(f"| {n:,} | {full * 1e3:.1f} ms | {targeted * 1e3:.2f} ms |", flush=True)


if __name__ == "__main__":
    main()
