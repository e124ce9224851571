"""Per-client data: the digits label split and the synthetic regression tasks (offline, deterministic)."""

from __future__ import annotations

import pytest
import torch

from perfedavg.data import DataError, check_dataset, load_clients
from perfedavg.data.digits import load_digits_arrays

DIGITS = {"name": "digits", "labels_per_client": 2, "test_fraction": 0.2}
REGRESSION = {"name": "regression", "samples_per_client": 40, "heterogeneity": 1.0, "noise": 0.1, "test_fraction": 0.25}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_digits_clients_hold_exactly_k_labels_and_disjoint_examples(k: int) -> None:
    clients = load_clients({**DIGITS, "labels_per_client": k}, 20, seed=0)
    x_all, _ = load_digits_arrays()
    seen = set()
    for c in clients:
        labels = sorted(set(c.train_labels()) | {int(v) for v in torch.unique(c.y_test)})
        assert len(labels) == k, (c.client_id, labels)
        assert c.num_train >= 1 and c.num_test >= 1
        rows = {tuple(r.flatten().tolist()) for r in torch.cat([c.x_train, c.x_test])}
        assert not rows & seen  # no image is given to two clients (digits has no exact duplicate images)
        seen |= rows
    assert len(seen) <= len(x_all)


def test_digits_split_is_deterministic_in_the_seed() -> None:
    a, b, c = (load_clients(DIGITS, 10, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(p.x_train, q.x_train) and torch.equal(p.y_test, q.y_test) for p, q in zip(a, b))
    assert any(not torch.equal(p.y_train, q.y_train) for p, q in zip(a, c))


def test_too_many_digits_clients_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"num_clients=500: .* at most \d+ clients"):
        check_dataset(DIGITS, 500, seed=0)


def test_regression_tasks_are_deterministic_and_differ_between_clients() -> None:
    a, b = load_clients(REGRESSION, 3, seed=1), load_clients(REGRESSION, 3, seed=1)
    for p, q in zip(a, b):
        assert torch.equal(p.x_train, q.x_train) and torch.equal(p.y_test, q.y_test)
        assert p.x_train.shape == (30, 3) and p.y_train.shape == (30, 5) and p.num_test == 10

    def fitted_map(c):  # least-squares [x, 1] → y on the client's training data
        design = torch.cat([c.x_train, torch.ones(c.num_train, 1)], dim=1)
        return torch.linalg.lstsq(design, c.y_train).solution

    maps = [fitted_map(c) for c in a]
    assert (maps[0] - maps[1]).abs().max() > 0.3  # heterogeneous tasks: personalization has something to do
    same = load_clients({**REGRESSION, "heterogeneity": 0.0}, 2, seed=1)
    assert (fitted_map(same[0]) - fitted_map(same[1])).abs().max() < 0.2  # one shared task, up to noise
