"""The speed benchmark's baseline (perfedavg.testing.plain_loop) does the same work as perfedavg: fed the same
minibatches, its Per-FedAvg step (fo, fd, hvp) and FedAvg-style averaging reach the same weights. A baseline that
skipped work would make the speed comparison meaningless."""

from __future__ import annotations

import copy

import pytest
import torch

from perfedavg import algorithms, curvature, task
from perfedavg.testing.plain_loop import PlainClient


@pytest.mark.parametrize("mode", ["fo", "fd", "hvp"])
def test_plain_loop_step_equals_perfedavg_on_the_same_minibatches(mode: str) -> None:
    torch.manual_seed(0)
    model = task.build_model({"name": "mlp", "input_shape": [1, 4, 4], "num_outputs": 3, "hidden": [5, 4]}, 0).double()
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = torch.rand(30, 1, 4, 4, dtype=torch.float64), torch.randint(0, 3, (30,))
    spec = algorithms.LocalSpec(hessian=mode, alpha=0.1, beta=0.2, delta=1e-4, local_steps=3, batch_size=6)
    # The minibatches perfedavg draws (three per step: D, D′, D″), replayed to the plain loop in the same order.
    replay = torch.Generator().manual_seed(5)
    batches = [algorithms.sample_batch(x, y, 6, replay) for _ in range(3 * spec.local_steps)]
    ours = copy.deepcopy(model)
    algorithms.local_update(ours, loss_fn, x, y, spec, torch.Generator().manual_seed(5))
    if mode == "fo":  # the plain loop draws no D″ for fo; perfedavg draws it and leaves it unused
        batches = [b for i, b in enumerate(batches) if i % 3 != 2]
    client = PlainClient(x, y, batch_size=6, seed=0)
    client.batch = iter(batches).__next__  # type: ignore[method-assign]
    client.train(model, loss_fn, spec.local_steps, spec.alpha, spec.beta, mode, spec.delta)
    assert torch.allclose(curvature.flat_parameters(model), curvature.flat_parameters(ours), rtol=0, atol=1e-12)
