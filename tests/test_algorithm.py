"""Per-FedAvg / FedAvg local steps against closed forms, and personalize-then-evaluate."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from perfedavg import algorithms, curvature
from perfedavg.algorithms import LocalSpec

N, D_IN, K = 12, 4, 2


def quadratic_problem():
    """A linear model Linear(4, 2) with MSE: the loss is quadratic in θ = (W, b), so H is constant."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D_IN, generator=g, dtype=torch.float64)
    y = torch.randn(N, K, generator=g, dtype=torch.float64)
    torch.manual_seed(1)
    model = nn.Linear(D_IN, K).double()
    return model, nn.MSELoss(), x, y


def closed_form(x: torch.Tensor, y: torch.Tensor):
    """Hand-derived gradient, Hessian action and Hessian diagonal of L(W, b) = 1/(nk) Σ ||W xᵢ + b − yᵢ||².

    ∇_W L = (2/nk) Rᵀ x,  ∇_b L = (2/nk) Σᵢ Rᵢ  with residuals R = x Wᵀ + b − y;
    H (vW, vb) = the same with R replaced by x vWᵀ + vb;
    diag H = (2/nk) Σᵢ x_il² for W_jl, and (2/nk)·n for b_j.
    """
    c = 2.0 / (N * K)

    def grad(W, b):
        R = x @ W.T + b - y
        return c * R.T @ x, c * R.sum(0)

    def hess(vW, vb):
        Rv = x @ vW.T + vb
        return c * Rv.T @ x, c * Rv.sum(0)

    diag_W = c * (x**2).sum(0).expand(K, D_IN)
    diag_b = torch.full((K,), c * N, dtype=x.dtype)
    return grad, hess, (diag_W, diag_b)


@pytest.mark.parametrize("mode", ["exact", "hvp", "fd", "diag", "fo"])
def test_one_perfedavg_step_equals_the_closed_form(mode: str) -> None:
    model, loss_fn, x, y = quadratic_problem()
    alpha, beta = 0.3, 0.2
    W, b = model.weight.detach().clone(), model.bias.detach().clone()
    grad, hess, (dW, db) = closed_form(x, y)

    gW, gb = grad(W, b)  # at w, on D
    tW, tb = W - alpha * gW, b - alpha * gb  # w̃
    g2W, g2b = grad(tW, tb)  # g = ∇f(w̃; D′)
    if mode in ("exact", "hvp", "fd"):
        hW, hb = hess(g2W, g2b)
        dirW, dirb = g2W - alpha * hW, g2b - alpha * hb
    elif mode == "diag":
        dirW, dirb = (1 - alpha * dW) * g2W, (1 - alpha * db) * g2b
    else:
        dirW, dirb = g2W, g2b
    expected = torch.cat([(W - beta * dirW).reshape(-1), b - beta * dirb])

    spec = LocalSpec(
        algorithm="perfedavg", hessian=mode, alpha=alpha, beta=beta, delta=1e-4, local_steps=1, batch_size=N
    )  # batch = the whole set, so D = D′ = D″
    result = algorithms.local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(0))
    tol = 1e-8 if mode == "fd" else 1e-12  # fd is exact on a quadratic up to round-off O(ε/δ)
    assert (result.weights - expected).abs().max().item() < tol
    assert torch.equal(curvature.flat_parameters(model), result.weights)  # the model holds the final weights


def test_modes_really_differ_on_the_quadratic() -> None:
    out = {}
    for mode in ("hvp", "diag", "fo"):
        model, loss_fn, x, y = quadratic_problem()
        spec = LocalSpec(hessian=mode, alpha=0.3, beta=0.2, local_steps=1, batch_size=N)
        out[mode] = algorithms.local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(0)).weights
    assert (out["hvp"] - out["fo"]).abs().max() > 1e-3
    assert (out["hvp"] - out["diag"]).abs().max() > 1e-4


def test_fedavg_step_is_sgd() -> None:
    model, loss_fn, x, y = quadratic_problem()
    grad, _, _ = closed_form(x, y)
    W, b = model.weight.detach().clone(), model.bias.detach().clone()
    gW, gb = grad(W, b)
    W1, b1 = W - 0.2 * gW, b - 0.2 * gb
    gW, gb = grad(W1, b1)
    expected = torch.cat([(W1 - 0.2 * gW).reshape(-1), b1 - 0.2 * gb])
    spec = LocalSpec(algorithm="fedavg", beta=0.2, local_steps=2, batch_size=N)
    result = algorithms.local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(0))
    assert (result.weights - expected).abs().max().item() < 1e-12
    assert result.curvature_s == 0.0


def test_minibatches_are_drawn_from_the_generator() -> None:
    """Same generator seed → same update; another seed → other minibatches → another update."""
    runs = []
    for seed in (5, 5, 6):
        model, loss_fn, x, y = quadratic_problem()
        spec = LocalSpec(hessian="hvp", alpha=0.1, beta=0.1, local_steps=3, batch_size=4)
        runs.append(algorithms.local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(seed)).weights)
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_personalization_uses_train_split_only_and_leaves_global_model() -> None:
    model, loss_fn, x, y = quadratic_problem()
    before = copy.deepcopy(model.state_dict())
    x_test, y_test = x[:3] * 100, y[:3] * 100  # wildly different test data: must not affect the adapted weights
    metrics = algorithms.personalized_evaluation(
        model, loss_fn, x, y, x_test, y_test, alpha=0.3, adapt_steps=1, classification=False
    )
    grad, _, _ = closed_form(x, y)
    gW, gb = grad(model.weight.detach(), model.bias.detach())
    adapted = copy.deepcopy(model)
    with torch.no_grad():
        adapted.weight -= 0.3 * gW
        adapted.bias -= 0.3 * gb
    with torch.no_grad():
        expected = float(loss_fn(adapted(x_test), y_test))
        expected_global = float(loss_fn(model(x_test), y_test))
    assert metrics["personalized_loss"] == pytest.approx(expected, rel=1e-12)
    assert metrics["global_loss"] == pytest.approx(expected_global, rel=1e-12)
    assert set(metrics) == {"global_loss", "personalized_loss"}
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v)


def test_classification_metrics_include_accuracy() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x = torch.randn(20, 3)
    y = (x[:, 0] > 0).long()
    m = algorithms.personalized_evaluation(
        model, nn.CrossEntropyLoss(), x, y, x, y, alpha=1.0, adapt_steps=20, classification=True
    )
    assert 0 <= m["global_acc"] <= 1 and m["personalized_acc"] > m["global_acc"]
    assert m["personalized_loss"] < m["global_loss"]


def test_bad_algorithm_and_mode_are_clear_errors() -> None:
    model, loss_fn, x, y = quadratic_problem()
    allowed = "fedavg, fedavg_ft, fedavg_matched, perfedavg, pfedme, ditto, local"
    with pytest.raises(ValueError, match=f"algorithm .sgd. is not one of: {allowed}"):
        algorithms.local_update(model, loss_fn, x, y, LocalSpec(algorithm="sgd"), torch.Generator())
    with pytest.raises(ValueError, match="'newton' is not one of"):
        algorithms.local_update(model, loss_fn, x, y, LocalSpec(hessian="newton"), torch.Generator())


class BufferedLinear(nn.Module):
    """A linear model with a buffer: personalized through a copy, not in place."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(D_IN, K).double()
        self.register_buffer("scale", torch.ones((), dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


@pytest.mark.parametrize("adapt_steps", [1, 3])
def test_in_place_personalization_equals_the_copy_and_restores_the_model(adapt_steps: int) -> None:
    model, loss_fn, x, y = quadratic_problem()
    start = curvature.flat_parameters(model)
    in_place = algorithms.personalized_evaluation(
        model, loss_fn, x, y, x[:4], y[:4], alpha=0.2, adapt_steps=adapt_steps, classification=False
    )
    assert torch.equal(curvature.flat_parameters(model), start)
    adapted = algorithms.personalize(model, loss_fn, x, y, 0.2, adapt_steps)
    with torch.no_grad():
        assert in_place["personalized_loss"] == float(loss_fn(adapted(x[:4]), y[:4]))  # bit for bit
    buffered = BufferedLinear()
    buffered.fc.load_state_dict(model.state_dict())
    via_copy = algorithms.personalized_evaluation(
        buffered, loss_fn, x, y, x[:4], y[:4], alpha=0.2, adapt_steps=adapt_steps, classification=False
    )
    assert via_copy["personalized_loss"] == pytest.approx(in_place["personalized_loss"], rel=1e-12)


def test_spread_subset_takes_evenly_spaced_examples_or_all() -> None:
    x, y = torch.arange(10).reshape(10, 1), torch.arange(10)
    assert algorithms.spread_subset(x, y, 4)[1].tolist() == [0, 2, 5, 7]  # ⌊i·10/4⌋
    assert algorithms.spread_subset(x, y, 4)[0][:, 0].tolist() == [0, 2, 5, 7]
    for n in (None, 10, 11):
        assert algorithms.spread_subset(x, y, n)[1] is y


def test_personalization_on_adapt_batch_examples_steps_on_that_subset_alone() -> None:
    """adapt_batch=n: the personalization gradient is over the n evenly spaced training examples, so the result
    equals personalizing on that subset; it differs from the whole split's."""
    model, loss_fn, x, y = quadratic_problem()
    sub_x, sub_y = algorithms.spread_subset(x, y, 5)
    capped = algorithms.personalized_evaluation(
        model, loss_fn, x, y, x[:4], y[:4], alpha=0.2, adapt_steps=2, classification=False, adapt_batch=5
    )
    on_subset = algorithms.personalized_evaluation(
        model, loss_fn, sub_x, sub_y, x[:4], y[:4], alpha=0.2, adapt_steps=2, classification=False
    )
    whole = algorithms.personalized_evaluation(
        model, loss_fn, x, y, x[:4], y[:4], alpha=0.2, adapt_steps=2, classification=False
    )
    assert capped == on_subset
    assert capped["personalized_loss"] != whole["personalized_loss"]
    assert capped["global_loss"] == whole["global_loss"]


@pytest.mark.parametrize("mode", ["fo", "fd", "hvp"])
def test_local_update_fast_path_equals_the_curvature_path(mode: str) -> None:
    """Models without buffers take ScratchModel; with one they take curvature.correction: same numbers."""
    model, loss_fn, x, y = quadratic_problem()
    buffered = BufferedLinear()
    buffered.fc.load_state_dict(model.state_dict())
    spec = LocalSpec(hessian=mode, alpha=0.1, beta=0.05, local_steps=3, batch_size=5)
    fast = algorithms.local_update(model, loss_fn, x, y, spec, torch.Generator().manual_seed(3))
    slow = algorithms.local_update(buffered, loss_fn, x, y, spec, torch.Generator().manual_seed(3))
    assert torch.equal(fast.weights, slow.weights) and fast.train_loss == slow.train_loss


@pytest.mark.parametrize("value", ["0", "-5"])
def test_an_adapt_batch_that_is_not_a_positive_integer_is_refused(value: str) -> None:
    from perfedavg.config import ConfigError
    from perfedavg.run.runner import compose, prepare

    with pytest.raises(ConfigError, match=f"adapt_batch={value}: must be a positive integer"):
        prepare(compose([f"adapt_batch={value}"]))
