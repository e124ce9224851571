"""The per-client data container shared by every data set."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ClientData:
    """One client's data: ``x_train [n, ...]``, ``y_train [n]`` (class ids) or ``[n, d]`` (regression targets),
    and the same for its own held-out test split."""

    client_id: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def to(self, device: torch.device | str) -> ClientData:
        """The same data on ``device``."""
        moved = (t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test))
        return ClientData(self.client_id, *moved)

    def train_labels(self) -> list[int]:
        """Sorted distinct training labels (classification data sets)."""
        return sorted(int(v) for v in torch.unique(self.y_train))


def split_generator(seed: int, client_id: int) -> torch.Generator:
    """The generator of client ``client_id``'s train/test shuffle: a function of (seed, client) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + client_id)


def split_train_test(
    client_id: int, x: torch.Tensor, y: torch.Tensor, test_fraction: float, generator: torch.Generator
) -> ClientData:
    """Shuffle one client's examples with ``generator`` and hold out ``test_fraction`` (at least one) for testing."""
    n = int(x.shape[0])
    perm = torch.randperm(n, generator=generator)
    n_test = min(n - 1, max(1, round(test_fraction * n)))
    test, train = perm[:n_test], perm[n_test:]
    return ClientData(client_id, x[train], y[train], x[test], y[test])
