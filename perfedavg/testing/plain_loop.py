"""The baseline a researcher would otherwise use: a plain single-process Per-FedAvg loop of the public repositories'
design (e.g. KarhouTam/Per-FedAvg, the PerAvg clients of pFedMe/PFLlib), written here for the speed benchmark.

Clients run one after another; each copies the global model, draws minibatches from a shuffling ``DataLoader``,
takes its temporary step on a ``deepcopy`` of the model, and (``hessian="fd"``) forms the finite-difference
Hessian-vector product by loading perturbed weights with ``load_state_dict`` and restoring them afterwards.
``hessian="hvp"`` uses a double backward, ``"fo"`` skips the correction. The server averages the state dicts.
No evaluation: the benchmark times training rounds. Not used by perfedavg itself; ``tests/test_plain_loop.py``
checks that it does the same work (the same weights from the same minibatches).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class PlainClient:
    """One client of the plain loop: its data loader and the local Per-FedAvg steps."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=generator)
        self.iterator = iter(self.loader)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.loader)
            return next(self.iterator)

    @staticmethod
    def grad(
        model: nn.Module, loss_fn: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        x, y = batch
        return torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))

    @staticmethod
    def fd_hvp(model: nn.Module, loss_fn: nn.Module, batch, v, delta: float) -> list[torch.Tensor]:
        frozen = copy.deepcopy(model.state_dict())
        plus, minus = OrderedDict(), OrderedDict()
        with torch.no_grad():
            for (name, p), g in zip(model.named_parameters(), v):
                plus[name] = p + delta * g
                minus[name] = p - delta * g
        model.load_state_dict(plus, strict=False)
        g_plus = PlainClient.grad(model, loss_fn, batch)
        model.load_state_dict(minus, strict=False)
        g_minus = PlainClient.grad(model, loss_fn, batch)
        model.load_state_dict(frozen)
        return [(a - b) / (2 * delta) for a, b in zip(g_plus, g_minus)]

    @staticmethod
    def hvp(model: nn.Module, loss_fn: nn.Module, batch, v) -> tuple[torch.Tensor, ...]:
        x, y = batch
        params = list(model.parameters())
        grads = torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True)
        return torch.autograd.grad(grads, params, grad_outputs=v)

    def train(
        self, model: nn.Module, loss_fn: nn.Module, steps: int, alpha: float, beta: float, hessian: str, delta: float
    ) -> None:
        for _ in range(steps):
            temp = copy.deepcopy(model)
            grads = self.grad(temp, loss_fn, self.batch())
            with torch.no_grad():
                for p, g in zip(temp.parameters(), grads):
                    p.sub_(alpha * g)
            g1 = self.grad(temp, loss_fn, self.batch())
            if hessian == "fo":
                update = g1
            else:
                batch = self.batch()
                h = (
                    self.fd_hvp(model, loss_fn, batch, g1, delta)
                    if hessian == "fd"
                    else self.hvp(model, loss_fn, batch, g1)
                )
                update = [a - alpha * b for a, b in zip(g1, h)]
            with torch.no_grad():
                for p, u in zip(model.parameters(), update):
                    p.sub_(beta * u)


def plain_round(
    global_model: nn.Module,
    clients: list[PlainClient],
    sampled: list[int],
    loss_fn: nn.Module,
    steps: int,
    alpha: float,
    beta: float,
    hessian: str,
    delta: float,
) -> None:
    """One training round: each sampled client trains a copy of the global model; the server averages them."""
    states = []
    for cid in sampled:
        local = copy.deepcopy(global_model)
        clients[cid].train(local, loss_fn, steps, alpha, beta, hessian, delta)
        states.append(local.state_dict())
    averaged = {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}
    global_model.load_state_dict(averaged)


def sample(rng: np.random.Generator, num_clients: int, per_round: int) -> list[int]:
    return sorted(int(c) for c in rng.choice(num_clients, size=per_round, replace=False))
