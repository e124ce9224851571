"""The per-client data container shared by every data set."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass(frozen=True)
class ClientData:
    """One client's data: ``x_train [n, ...]``, ``y_train [n]`` (class ids) or ``[n, d]`` (regression targets),
    the same for its own held-out test split, and (with ``dataset.val_fraction`` > 0) a validation split held out
    of its training data (``None`` otherwise)."""

    client_id: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_val(self) -> int:
        return 0 if self.x_val is None else int(self.x_val.shape[0])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor held (train, test, and validation when there is one)."""
        splits = (self.x_train, self.y_train, self.x_test, self.y_test, self.x_val, self.y_val)
        return tuple(t for t in splits if t is not None)

    def to(self, device: torch.device | str) -> ClientData:
        """The same data on ``device``."""
        moved = {k: getattr(self, k) for k in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val")}
        return replace(self, **{k: None if t is None else t.to(device) for k, t in moved.items()})

    def eval_split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` of the split that evaluation uses: ``"test"`` or ``"val"`` (needs a validation split)."""
        if split == "test":
            return self.x_test, self.y_test
        if split == "val" and self.x_val is not None and self.y_val is not None:
            return self.x_val, self.y_val
        raise ValueError(f"eval_split={split}: client {self.client_id} has no such split (val needs val_fraction > 0)")

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


def validation_generator(seed: int, client_id: int) -> torch.Generator:
    """The generator of client ``client_id``'s validation hold-out: a function of (seed, client) only, and a stream
    apart from :func:`split_generator`'s."""
    return torch.Generator().manual_seed((seed * 1_000_003 + client_id) * 7 + 3)


def hold_out_validation(data: ClientData, val_fraction: float, generator: torch.Generator) -> ClientData:
    """Move a random ``val_fraction`` of ``data``'s training split (at least one example; at least one left to train
    on) into its validation split. The test split is untouched, so the three splits are disjoint; the remaining
    training examples keep their order. ``val_fraction=0`` returns ``data`` itself.

    Raises ``ValueError`` if the training split has fewer than two examples."""
    if val_fraction <= 0:
        return data
    n = data.num_train
    if n < 2:
        raise ValueError(
            f"dataset.val_fraction={val_fraction}: client {data.client_id} has {n} training example(s); "
            "a validation split needs at least 2"
        )
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    val = torch.randperm(n, generator=generator)[:n_val].sort().values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val] = False
    train = keep.nonzero().squeeze(1)
    x, y = data.x_train, data.y_train
    return replace(data, x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val])
