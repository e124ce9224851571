"""The stability monitor: its λ_max against the dense Hessian, the server's summary and warning, and that switching
it on changes no result."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from support import federate, without_times
from torch import nn

from perfedavg import curvature
from perfedavg.cli.main import check_composes
from perfedavg.config import ConfigError
from perfedavg.curvature import stability
from perfedavg.curvature.spectrum import lanczos_top_eigenvalue
from perfedavg.run.runner import compose, prepare


def _problem() -> tuple[nn.Module, nn.Module, tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()  # P = 51
    gen = torch.Generator().manual_seed(1)
    batch = (torch.randn(8, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (8,), generator=gen))
    loss_fn = nn.CrossEntropyLoss()
    layout = curvature.parameter_layout(model)
    w = curvature.flat_parameters(model)

    def f(flat: torch.Tensor) -> torch.Tensor:
        return loss_fn(torch.func.functional_call(model, layout.as_dict(flat), (batch[0],)), batch[1])

    dense = torch.autograd.functional.hessian(f, w, vectorize=True)
    return model, loss_fn, batch, torch.linalg.eigvalsh(dense)


def test_lanczos_reaches_the_dense_top_eigenvalue_from_below() -> None:
    model, loss_fn, batch, eigenvalues = _problem()
    top = float(eigenvalues[-1])
    p = eigenvalues.numel()
    before = curvature.snapshot(model)
    exact = stability.sharpness(model, loss_fn, batch, p)
    assert exact == pytest.approx(top, rel=1e-9)
    estimates = [lanczos_top_eigenvalue(curvature.HessianOperator(model, loss_fn, batch), k) for k in (1, 3, 8)]
    assert all(e <= top * (1 + 1e-12) for e in estimates)  # Ritz values never exceed λ_max
    assert estimates == sorted(estimates)  # and grow with the Krylov space
    assert estimates[0] < 0.99 * top  # one step is not enough here: the test can tell a wrong basis
    assert lanczos_top_eigenvalue(curvature.HessianOperator(model, loss_fn, batch), 8) == estimates[-1]  # seeded
    after = curvature.snapshot(model)
    assert all(torch.equal(before["state"][k], after["state"][k]) for k in before["state"])


def test_lanczos_stops_early_on_an_invariant_subspace_and_refuses_bad_counts() -> None:
    model = nn.Linear(3, 1, bias=False).double()  # squared loss of a linear model: H = 2/n XᵀX, rank ≤ n

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((out.squeeze(-1) - y) ** 2).mean()

    x = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)  # rank one: H = diag(2, 0, 0)
    op = curvature.HessianOperator(model, loss_fn, (x, torch.zeros(1, dtype=torch.float64)))
    assert lanczos_top_eigenvalue(op, 50) == pytest.approx(2.0, rel=1e-12)
    assert op.products <= 3
    with pytest.raises(ValueError, match="iterations"):
        lanczos_top_eigenvalue(op, 0)


def test_the_watch_sums_up_a_round_and_warns_once_per_episode() -> None:
    watch = stability.StabilityWatch(alpha=0.1, warn_above=2.0, warn_fraction=0.25)
    calm = watch.observe(1, [5.0, 15.0, 8.0, 1.0], [0.1, 0.3, 0.2, 0.2])
    assert calm.warning is None
    assert calm.metrics["stability/alpha_lambda_max"] == pytest.approx((0.5 + 1.5 + 0.8 + 0.1) / 4)
    assert calm.metrics["stability/alpha_lambda_max_max"] == pytest.approx(1.5)
    assert calm.metrics["stability/fraction_above_1"] == 0.25
    assert calm.metrics["stability/fraction_above_2"] == 0.0
    assert calm.metrics["stability/safe_alpha"] == pytest.approx(1 / 15)
    assert calm.metrics["time/stability_s"] == pytest.approx(0.2)
    assert calm.histograms["stability/alpha_lambda_max_per_client"] == pytest.approx([0.5, 1.5, 0.8, 0.1])

    rough = watch.observe(2, [25.0, math.nan, 8.0, 1.0], [0.1] * 4)  # a non-finite probe counts as unstable
    assert rough.metrics["stability/fraction_above_2"] == 0.5
    assert rough.metrics["stability/safe_alpha"] == pytest.approx(1 / 25)
    assert rough.warning is not None
    assert "round 2" in rough.warning and "2 of 4" in rough.warning and "alpha ≤ 0.04" in rough.warning
    assert stability.WARNING_PATTERN.search(f"[run] {rough.warning}").group(1) == "2"  # how perfedavg-report finds it
    assert watch.observe(3, [25.0, 30.0, 8.0, 1.0], [0.1] * 4).warning is None  # said once
    assert watch.observe(4, [5.0, 5.0, 8.0, 1.0], [0.1] * 4).warning is None  # calm again
    assert watch.observe(5, [25.0, 30.0, 8.0, 1.0], [0.1] * 4).warning is not None  # a new episode

    quiet = stability.StabilityWatch(alpha=0.1, warn_above=2.0, warn_fraction=0.25, warns=False)
    assert quiet.observe(1, [50.0] * 4, [0.1] * 4).warning is None


SMALL = ["num_rounds=4", "num_clients=6", "fraction=0.5", "local_steps=2", "eval_every=2", "backend=inprocess"]


def test_the_monitor_changes_no_result_and_logs_its_metrics(tmp_path: Path, caplog) -> None:
    off = federate([*SMALL, "stability.every=0"], tmp_path / "off")
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        on = federate([*SMALL, "stability.every=2", "alpha=0.6"], tmp_path / "on")
        same_alpha = federate([*SMALL, "stability.every=2"], tmp_path / "on-default-alpha")
    assert "stability/alpha_lambda_max" in same_alpha["rounds"][1]
    stripped = [{k: v for k, v in r.items() if not k.startswith("stability/")} for r in same_alpha["rounds"]]
    assert without_times(stripped) == without_times(off["rounds"])  # bit for bit, with the probe drawing batches
    probed = [r["round"] for r in on["rounds"] if "stability/alpha_lambda_max" in r]
    assert probed == [2, 4]
    assert not any(k.startswith("stability/") for k in off["rounds"][1])
    warnings = [r.getMessage() for r in caplog.records if "α·λ_max" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("round 2: ") and "alpha=0.6" in warnings[0]


def test_first_order_runs_are_measured_but_not_warned_about(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        fo = federate([*SMALL, "stability.every=2", "alpha=0.6", "hessian=fo"], tmp_path / "fo")
    assert fo["rounds"][1]["stability/fraction_above_2"] > 0
    assert not [r for r in caplog.records if "α·λ_max" in r.getMessage()]


@pytest.mark.parametrize(
    "override, named",
    [
        ("stability.every=-1", "stability.every=-1: must be ≥ 0"),
        ("stability.iterations=0", "stability.iterations=0: must be ≥ 1"),
        ("stability.warn_above=0", "stability.warn_above=0.0: must be a positive number"),
        ("stability.warn_fraction=1.5", "stability.warn_fraction=1.5: must be in (0, 1]"),
        ("stability.safeguard=-1", "stability.safeguard=-1.0: must be a positive number c"),
    ],
)
def test_bad_monitor_settings_are_named(override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("]", r"\]")):
        prepare(compose([override]))


def test_the_monitor_is_refused_where_the_algorithm_does_not_read_it() -> None:
    with pytest.raises(ConfigError, match="stability.every=5: has no effect with algorithm=ditto"):
        check_composes(["algorithm=ditto", "stability.every=5"])
    check_composes(["algorithm=ditto"])  # its default (on) is no override: accepted, and never read


def test_the_safeguard_caps_each_clients_step_and_only_where_it_must(tmp_path: Path) -> None:
    assert stability.guarded_alpha(0.1, 20.0, 1.0) == 0.05
    assert stability.guarded_alpha(0.1, 5.0, 1.0) == 0.1
    assert stability.guarded_alpha(0.1, math.nan, 1.0) == 0.1 and stability.guarded_alpha(0.1, -3.0, 1.0) == 0.1
    off = federate([*SMALL, "stability.every=0", "alpha=0.6"], tmp_path / "off")
    loose = federate([*SMALL, "stability.every=0", "alpha=0.6", "stability.safeguard=1e9"], tmp_path / "loose")
    tight = federate([*SMALL, "stability.every=0", "alpha=0.6", "stability.safeguard=1"], tmp_path / "tight")
    # a cap that never binds: the paper's algorithm bit for bit (the probe draws from its own generator)
    strip = [{k: v for k, v in r.items() if not k.startswith("stability/")} for r in loose["rounds"]]
    assert without_times(strip) == without_times(off["rounds"])
    assert all(r["stability/guarded_fraction"] == 0 for r in loose["rounds"])
    # a binding cap: every round probed, the lowered steps reported, a different run
    assert [r["round"] for r in tight["rounds"] if "stability/guarded_alpha" in r] == [1, 2, 3, 4]
    assert all(r["stability/guarded_alpha"] < 0.6 for r in tight["rounds"])
    assert tight["rounds"][0]["stability/guarded_fraction"] > 0
    assert tight["final"]["eval/personalized_acc"] != off["final"]["eval/personalized_acc"]


def test_a_resume_must_keep_the_safeguard() -> None:
    from perfedavg.config.resume import result_differences

    base = {"alpha": 0.1, "stability": {"every": 10, "iterations": 20, "safeguard": None}}
    assert result_differences(base, {**base, "stability": {"every": 1, "iterations": 5, "safeguard": None}}) == []
    guarded = {**base, "stability": {"every": 10, "iterations": 20, "safeguard": 1.0}}
    assert result_differences(base, guarded) == ["stability.safeguard: None → 1.0"]
    fewer = {**base, "stability": {"every": 10, "iterations": 5, "safeguard": 1.0}}
    assert result_differences(guarded, fewer) == ["stability.iterations: 20 → 5"]
    old = {"alpha": 0.1}  # a checkpoint older than the monitor resumes under today's defaults
    assert result_differences(old, base) == []


def test_by_default_only_runs_that_apply_the_hessian_term_are_probed(tmp_path: Path) -> None:
    assert stability.probe_every(None, "hvp") == stability.AUTO_EVERY == 20
    assert stability.probe_every(None, "fo") == 0 and stability.probe_every(5, "fo") == 5
    base = [*SMALL, "num_rounds=20", "eval_every=20"]
    hvp = federate([*base, "hessian=hvp"], tmp_path / "hvp")
    fo = federate([*base, "hessian=fo"], tmp_path / "fo")
    assert [r["round"] for r in hvp["rounds"] if "stability/alpha_lambda_max" in r] == [20]
    assert not any("stability/alpha_lambda_max" in r for r in fo["rounds"])
