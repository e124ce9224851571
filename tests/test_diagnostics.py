"""Curvature diagnostics: their values against dense definitions, and that switching them on changes nothing else."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from support import without_times
from torch import nn

from perfedavg import algorithms, curvature
from perfedavg.algorithms import LocalSpec
from perfedavg.curvature import diagnostics
from perfedavg.engines.inprocess_grid import InProcessGrid
from perfedavg.federation.record import run_and_record
from perfedavg.models import MLP, Net
from perfedavg.run.runner import compose, prepare

TAGS = [diagnostics.TAG_PREFIX + n for n in diagnostics.NAMES]


def dense_hessian(model: nn.Module, loss_fn, batch, w: torch.Tensor) -> torch.Tensor:
    layout = curvature.parameter_layout(model)

    def f(flat: torch.Tensor) -> torch.Tensor:
        return loss_fn(torch.func.functional_call(model, layout.as_dict(flat), (batch[0],)), batch[1])

    return torch.autograd.functional.hessian(f, w, vectorize=True)  # rows by vmap: the values of row by row


@pytest.mark.parametrize("alpha, delta", [(0.05, 1e-3), (0.3, 1e-2)])
def test_diagnostics_equal_their_definitions_on_a_dense_hessian(alpha: float, delta: float) -> None:
    torch.manual_seed(0)
    model = Net(5, 5, num_classes=4).double()
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(8, 1, 5, 5, generator=gen, dtype=torch.float64), torch.randint(0, 4, (8,), generator=gen))
    p = curvature.parameter_layout(model).size
    w = curvature.flat_parameters(model) + 0.1 * torch.randn(p, generator=gen, dtype=torch.float64)
    g = torch.randn(p, generator=gen, dtype=torch.float64)
    before = curvature.snapshot(model)

    got = diagnostics.meta_step_diagnostics(model, nn.CrossEntropyLoss(), batch, g, w, alpha, delta, eigen_tol=1e-8)

    H = dense_hessian(model, nn.CrossEntropyLoss(), batch, w)
    hg = H @ g
    corrected = g - alpha * hg
    fd = curvature.fd_hvp(_at(model, w), nn.CrossEntropyLoss(), batch, g, delta)
    assert set(got) == set(diagnostics.NAMES)
    assert got["correction_ratio"] == pytest.approx(alpha * hg.norm().item() / g.norm().item(), rel=1e-9)
    assert got["cosine_to_fo"] == pytest.approx((corrected @ g / (corrected.norm() * g.norm())).item(), rel=1e-9)
    assert got["fd_rel_error"] == pytest.approx(((fd - hg).norm() / hg.norm()).item(), rel=1e-6)
    assert 0 < got["fd_rel_error"] < 0.1  # a small but real difference: fd is not exact
    assert got["top_eigenvalue"] == pytest.approx(torch.linalg.eigvalsh(H)[-1].item(), rel=1e-7)
    # the model is untouched (its own parameters are not w)
    after = curvature.snapshot(model)
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])


def _at(model: nn.Module, w: torch.Tensor) -> nn.Module:
    import copy

    moved = copy.deepcopy(model)
    curvature.set_flat_parameters(moved, w)
    return moved


def test_a_zero_gradient_gives_nan_ratios_not_an_error() -> None:
    torch.manual_seed(0)
    model = MLP(6, 3, hidden=(4,)).double()
    batch = (torch.randn(5, 6, dtype=torch.float64), torch.randint(0, 3, (5,)))
    w = curvature.flat_parameters(model)
    got = diagnostics.meta_step_diagnostics(model, nn.CrossEntropyLoss(), batch, torch.zeros_like(w), w, 0.1, 1e-3)
    assert math.isnan(got["correction_ratio"]) and math.isnan(got["cosine_to_fo"]) and math.isnan(got["fd_rel_error"])
    assert math.isfinite(got["top_eigenvalue"])


@pytest.mark.parametrize("mode", curvature.MODES)
def test_local_update_weights_are_bit_for_bit_the_same_with_diagnostics(mode: str) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 4, 4), torch.randint(0, 3, (40,))
    spec = LocalSpec(hessian=mode, alpha=0.1, beta=0.05, local_steps=3, batch_size=8)
    results, rng_after = [], []
    for diagnose in (False, True):
        torch.manual_seed(1)
        model = Net(4, 4, num_classes=3)
        gen = torch.Generator().manual_seed(2)
        results.append(algorithms.local_update(model, nn.CrossEntropyLoss(), x, y, spec, gen, diagnose=diagnose))
        rng_after.append(gen.get_state())
    plain, diagnosed = results
    assert torch.equal(plain.weights, diagnosed.weights)
    assert plain.train_loss == diagnosed.train_loss
    assert torch.equal(rng_after[0], rng_after[1])
    assert plain.diagnostics == {} and plain.diagnostics_s == 0.0
    assert set(diagnosed.diagnostics) == set(diagnostics.NAMES) and diagnosed.diagnostics_s > 0
    assert all(math.isfinite(v) for v in diagnosed.diagnostics.values())


def test_fedavg_has_no_meta_step_to_diagnose() -> None:
    torch.manual_seed(0)
    model, x, y = Net(4, 4, num_classes=3), torch.randn(20, 1, 4, 4), torch.randint(0, 3, (20,))
    spec = LocalSpec(algorithm="fedavg", local_steps=2, batch_size=8)
    result = algorithms.local_update(model, nn.CrossEntropyLoss(), x, y, spec, torch.Generator(), diagnose=True)
    assert result.diagnostics == {}


SMALL = ["num_clients=4", "num_rounds=3", "fraction=0.5", "local_steps=2", "batch_size=8", "hessian=fd"]


def test_a_federation_with_diagnostics_logs_them_and_changes_nothing_else(tmp_path: Path) -> None:
    """diagnostics.every=2 over 3 rounds: round 2 has the four client means (TensorBoard scalars and histograms,
    metrics.json) and time/diagnostics_s; every other metric of every round equals the run without diagnostics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = {}
    for every in (0, 2):
        cfg = prepare(compose([*SMALL, f"diagnostics.every={every}"]))
        runs[every] = run_and_record(InProcessGrid(_client_app(), cfg["num_clients"]), cfg, tmp_path / str(every))
    plain, diagnosed = (without_times(runs[e]["rounds"], also=("curvature/",)) for e in (0, 2))
    assert plain == diagnosed
    assert not any(k.startswith("curvature/") for r in runs[0]["rounds"] for k in r)
    with_diag = {r["round"]: r for r in runs[2]["rounds"]}
    assert all(tag in with_diag[2] for tag in TAGS) and with_diag[2]["time/diagnostics_s"] > 0
    assert not any(k.startswith("curvature/") for k in (*with_diag[1], *with_diag[3]))
    assert all(math.isfinite(with_diag[2][tag]) for tag in TAGS)
    assert 0 < with_diag[2]["curvature/correction_ratio"] and -1 <= with_diag[2]["curvature/cosine_to_fo"] <= 1
    saved = json.loads((tmp_path / "2" / "metrics.json").read_text())["rounds"][1]
    assert saved["curvature/top_eigenvalue"] == with_diag[2]["curvature/top_eigenvalue"]
    acc = EventAccumulator(str(tmp_path / "2"), size_guidance={"scalars": 0, "histograms": 0}).Reload()
    for tag in TAGS:
        assert [e.step for e in acc.Scalars(tag)] == [2]
        assert tag not in acc.Tags()["histograms"]  # a tag both scalar and histogram is dropped by TensorBoard's loader
        assert acc.Histograms(tag + "_per_client")[0].histogram_value.num == 2  # the two clients trained in round 2


def _client_app():
    from perfedavg.engines.client_app import app

    return app


def test_the_server_mean_leaves_out_nan_values() -> None:
    from perfedavg.federation.round_math import diagnostic_means

    rows = [
        {"curvature/top_eigenvalue": 2.0, "curvature/fd_rel_error": math.nan, "diagnostics-s": 0.5},
        {"curvature/top_eigenvalue": 4.0, "curvature/fd_rel_error": math.nan, "diagnostics-s": 1.5},
    ]
    out, per_client = diagnostic_means(rows)
    assert out["curvature/top_eigenvalue"] == 3.0 and math.isnan(out["curvature/fd_rel_error"])
    assert out["time/diagnostics_s"] == 1.0
    assert per_client["curvature/top_eigenvalue_per_client"] == [2.0, 4.0]
