"""pFedMe's and Ditto's local math against closed forms (issue 23 §4), on a quadratic loss where the answers are
known exactly: f(θ) = mean((Xθ − y)²) for a bias-free linear model, so ∇f = Hθ − b with H = 2XᵀX/n, b = 2Xᵀy/n."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perfedavg import curvature
from perfedavg.algorithms import ditto, pfedme, sample_batch

D, N = 5, 40


def quadratic_problem(seed: int = 0) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(D, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, D, generator=gen, dtype=torch.float64))
    x = torch.randn(N, D, generator=gen, dtype=torch.float64)
    y = torch.randn(N, 1, generator=gen, dtype=torch.float64)
    return model, nn.MSELoss(), x, y


def hessian_and_shift(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return 2 * x.T @ x / len(x), (2 * x.T @ y / len(x)).reshape(-1)


@pytest.mark.parametrize("lam", [0.1, 1.0, 15.0])
def test_pfedme_inner_solution_is_the_moreau_subproblems_closed_form(lam: float) -> None:
    """θ̂ = (H + λI)⁻¹ (b + λ w): the minimizer of f(θ) + λ/2 ‖θ − w‖²."""
    model, loss_fn, x, y = quadratic_problem()
    h, b = hessian_and_shift(x, y)
    w = curvature.flat_parameters(model)
    exact = torch.linalg.solve(h + lam * torch.eye(D, dtype=h.dtype), b + lam * w)
    eta_p = 1.0 / float(torch.linalg.eigvalsh(h).max() + lam)
    grad_fn = lambda batch, at: curvature.loss_and_gradient(model, loss_fn, batch, at=at)  # noqa: E731
    theta, first_loss = pfedme.moreau_point(grad_fn, (x, y), w, lam, eta_p, inner_steps=3000)
    assert torch.allclose(theta, exact, atol=1e-9, rtol=0)
    few, _ = pfedme.moreau_point(grad_fn, (x, y), w, lam, eta_p, inner_steps=2)
    assert (few - exact).norm() > 1e-3  # the comparison can tell an unconverged solve from the answer
    assert first_loss == pytest.approx(float(loss_fn(x @ w.reshape(D, 1), y)), rel=1e-12)  # f at the anchor
    personal = pfedme.personalized_weights(model, loss_fn, x, y, lam=lam, eta_p=eta_p, inner_steps=3000)
    assert torch.allclose(personal, exact, atol=1e-9, rtol=0)
    assert torch.equal(curvature.flat_parameters(model), w)  # personalizing leaves the global model as it was


def test_pfedme_local_step_moves_the_local_model_toward_the_personalized_one() -> None:
    """One local step with a full batch: w ← w − ηλ (w − θ̂(w)), θ̂ in closed form."""
    model, loss_fn, x, y = quadratic_problem(1)
    h, b = hessian_and_shift(x, y)
    w = curvature.flat_parameters(model)
    lam, eta = 2.0, 0.1
    eta_p = 1.0 / float(torch.linalg.eigvalsh(h).max() + lam)
    theta = torch.linalg.solve(h + lam * torch.eye(D, dtype=h.dtype), b + lam * w)
    new, loss = pfedme.local_update(
        model, loss_fn, x, y, lam=lam, eta_p=eta_p, inner_steps=3000, eta=eta, local_steps=1, batch_size=N,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.allclose(new, w - eta * lam * (w - theta), atol=1e-9, rtol=0)
    assert torch.equal(curvature.flat_parameters(model), new)
    assert loss == pytest.approx(float(loss_fn(x @ w.reshape(D, 1), y)), rel=1e-9)  # f(w; D) before the step


def test_pfedme_server_mix_is_a_convex_combination() -> None:
    g, m = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 4.0])
    assert torch.equal(pfedme.server_mix(g, m, 1.0), m)
    assert torch.allclose(pfedme.server_mix(g, m, 0.25), 0.75 * g + 0.25 * m)


def test_ditto_with_lambda_zero_is_local_training() -> None:
    """λ = 0: the personal model takes plain SGD steps on the client's minibatches (the same draws)."""
    model, loss_fn, x, y = quadratic_problem(2)
    w = curvature.flat_parameters(model)
    start = w + 0.5
    v, _ = ditto.personal_update(
        model, loss_fn, x, y, start, w, lam=0.0, eta=0.05, steps=4, batch_size=8,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    gen, expected = torch.Generator().manual_seed(3), start.clone()
    for _ in range(4):
        batch = sample_batch(x, y, 8, gen)
        expected = expected - 0.05 * curvature.loss_and_gradient(model, loss_fn, batch, at=expected)[1]
    assert torch.allclose(v, expected, atol=1e-12, rtol=0)
    assert torch.equal(curvature.flat_parameters(model), w)  # the model's own parameters are left alone


@pytest.mark.parametrize("lam", [1e6, 1e12])
def test_ditto_with_a_huge_lambda_keeps_the_personal_model_at_the_global_one(lam: float) -> None:
    model, loss_fn, x, y = quadratic_problem(3)
    w = curvature.flat_parameters(model)
    v, _ = ditto.personal_update(
        model, loss_fn, x, y, w + 1.0, w, lam=lam, eta=0.05, steps=3, batch_size=8,
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    assert (v - w).abs().max() <= 50.0 / lam  # → w as λ → ∞ (the explicit step would have diverged: ηλ ≫ 2)


def test_ditto_converges_to_the_regularized_optimum_with_a_full_batch() -> None:
    """Full-batch steps reach v* = (H + λI)⁻¹ (b + λ w), the minimizer of the personal objective."""
    model, loss_fn, x, y = quadratic_problem(4)
    h, b = hessian_and_shift(x, y)
    w = curvature.flat_parameters(model)
    lam = 0.7
    v, _ = ditto.personal_update(
        model, loss_fn, x, y, torch.zeros_like(w), w, lam=lam, eta=0.1, steps=3000, batch_size=N,
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    exact = torch.linalg.solve(h + lam * torch.eye(D, dtype=h.dtype), b + lam * w)
    assert torch.allclose(v, exact, atol=1e-9, rtol=0)
