"""perfedavg.curvature against dense ground truth, as data: (model, loss, batch, seed) cases in float64/float32.

Ground truth is ``torch.autograd.functional.hessian`` over the flattened parameters, evaluated with
``functional_call`` (the seeds' recipe done right: no hand-written copy of the forward, no ``.data``).
"""

from __future__ import annotations

import copy
import functools
import itertools
import resource
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from perfedavg import curvature as C
from perfedavg.curvature import backpack as diag_backpack
from perfedavg.curvature import dense, diagonal
from perfedavg.models import ANN, CNN, MLP, CharLSTM, Net

Batch = tuple[torch.Tensor, torch.Tensor]


class WithUnused(nn.Module):
    """ANN-sized model with a parameter the forward never touches (its Hessian rows must be zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.unused = nn.Linear(2, 2)
        self.fc2 = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class WithBatchNorm(nn.Module):
    """A model with buffers that a train-mode forward would update (they must stay unchanged)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.bn(self.fc1(x)))


def frozen_ann() -> nn.Module:
    model = ANN()
    model.fc1.bias.requires_grad_(False)
    return model


def regression_batch(n: int = 6) -> Callable[[torch.Generator, torch.dtype], Batch]:
    return lambda g, dt: (torch.randn(n, 3, generator=g, dtype=dt), torch.randn(n, 5, generator=g, dtype=dt))


def image_batch(c: int, h: int, w: int, k: int, n: int = 6) -> Callable[[torch.Generator, torch.dtype], Batch]:
    return lambda g, dt: (torch.randn(n, c, h, w, generator=g, dtype=dt), torch.randint(0, k, (n,), generator=g))


def text_batch(vocab: int, length: int, n: int = 6) -> Callable[[torch.Generator, torch.dtype], Batch]:
    """Character ids ``[n, length]`` and next-character targets ``[n]`` (int64 whatever the model's dtype)."""
    return lambda g, dt: (torch.randint(0, vocab, (n, length), generator=g), torch.randint(0, vocab, (n,), generator=g))


@dataclass(frozen=True)
class Case:
    name: str
    model: Callable[[], nn.Module]
    loss: Callable[[], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
    batch: Callable[[torch.Generator, torch.dtype], Batch]
    seed: int = 0

    def build(self, dtype: torch.dtype) -> tuple[nn.Module, Callable, Batch]:
        torch.manual_seed(self.seed)
        model = self.model().to(dtype)
        gen = torch.Generator().manual_seed(self.seed + 1)
        return model, self.loss(), self.batch(gen, dtype)


CASES = [
    Case("ann-mse", ANN, nn.MSELoss, regression_batch()),
    Case("net-4x4-ce", lambda: Net(4, 4), nn.CrossEntropyLoss, image_batch(1, 4, 4, 5), seed=1),
    Case("net-5x3-ce", lambda: Net(5, 3), nn.CrossEntropyLoss, image_batch(1, 5, 3, 5), seed=2),
    Case(
        "net-3ch-sum",
        lambda: Net(3, 3, in_channels=3, num_classes=4),
        lambda: nn.CrossEntropyLoss(reduction="sum"),
        image_batch(3, 3, 3, 4),
        seed=3,
    ),
    Case("mlp-elu-ce", lambda: MLP(12, 4, hidden=(6, 5)), nn.CrossEntropyLoss, image_batch(1, 3, 4, 4), seed=4),
    Case("frozen-param", frozen_ann, nn.MSELoss, regression_batch(), seed=5),
    Case("unused-param", WithUnused, nn.MSELoss, regression_batch(), seed=6),
    Case("functional-loss", lambda: MLP(12, 3, hidden=(5,)), lambda: F.cross_entropy, image_batch(1, 3, 4, 3), seed=7),
    Case("batchnorm-train", WithBatchNorm, nn.MSELoss, regression_batch(), seed=8),
    # the FedAvg paper's CNN, tiny: both convolutions, ReLU, max pooling, the hidden and output layers
    Case(
        "cnn-tiny",
        lambda: CNN(1, 4, 4, 3, channels=(2, 2), hidden=4),
        nn.CrossEntropyLoss,
        image_batch(1, 4, 4, 3),
        seed=9,
    ),
    # LEAF's character LSTM, tiny: embedding, two LSTM layers, the last step's output to the vocabulary
    Case(
        "lstm-tiny",
        lambda: CharLSTM(5, embedding=2, hidden=3, layers=2),
        nn.CrossEntropyLoss,
        text_batch(5, 4),
        seed=10,
    ),
]
IDS = [c.name for c in CASES]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}


def dense_hessian(model: nn.Module, loss_fn: Callable, batch: Batch) -> torch.Tensor:
    """Ground truth: autograd.functional.hessian of the loss as a function of the flat parameter vector (its rows by
    vmap: the same values as row by row to a few ulps, in half the time)."""
    layout = C.parameter_layout(model)
    inputs, targets = batch
    buffers = dict(model.named_buffers())

    def f(flat: torch.Tensor) -> torch.Tensor:
        state = {**layout.as_dict(flat), **{k: b.clone() for k, b in buffers.items()}}
        return loss_fn(functional_call(model, state, (inputs,)), targets)

    return torch.autograd.functional.hessian(f, C.flat_parameters(model), vectorize=True)


@pytest.fixture(scope="module")
def truth() -> dict[tuple[str, torch.dtype], torch.Tensor]:
    out = {}
    for case in CASES:
        for dtype in TOL:
            out[case.name, dtype] = dense_hessian(*case.build(dtype))
    return out


@pytest.mark.parametrize("dtype", list(TOL), ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hessian_matches_dense_ground_truth(case: Case, dtype: torch.dtype, truth) -> None:
    model, loss_fn, batch = case.build(dtype)
    H = C.hessian(model, loss_fn, batch)
    ref = truth[case.name, dtype]
    assert H.shape == ref.shape == (C.parameter_layout(model).size,) * 2
    assert H.dtype == dtype
    assert (H - ref).abs().max().item() <= TOL[dtype]
    assert ref.abs().max().item() > 1e-3  # the comparison is not between two zero matrices


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hessian_is_symmetric(case: Case) -> None:
    H = C.hessian(*case.build(torch.float64))
    assert torch.allclose(H, H.T, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dtype", list(TOL), ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hvp_equals_dense_hessian_times_v(case: Case, dtype: torch.dtype, truth) -> None:
    model, loss_fn, batch = case.build(dtype)
    v = torch.randn(C.parameter_layout(model).size, generator=torch.Generator().manual_seed(9), dtype=dtype)
    hv = C.hvp(model, loss_fn, batch, v)
    expected = truth[case.name, dtype] @ v
    assert (hv - expected).abs().max().item() <= 10 * TOL[dtype] * max(1.0, expected.abs().max().item())


#: Cases forward-over-reverse cannot differentiate in float64 (torch.func's limits: a gradient block that does not
#: depend on the parameters is a ZeroTensor it then tries to write to): the table must never choose it for these models.
FORWARD_FAILS = {"ann-mse", "frozen-param", "unused-param", "batchnorm-train"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_over_reverse_hvp_equals_dense_hessian_times_v_or_fails_clearly(case: Case, truth) -> None:
    model, loss_fn, batch = case.build(torch.float64)
    v = torch.randn(C.parameter_layout(model).size, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    if case.name in FORWARD_FAILS:
        with pytest.raises(RuntimeError, match="ZeroTensors are immutable"):
            C.hvp_forward_over_reverse(model, loss_fn, batch, v)
        return
    hv = C.hvp_forward_over_reverse(model, loss_fn, batch, v)
    expected = truth[case.name, torch.float64] @ v
    assert (hv - expected).abs().max().item() <= 10 * TOL[torch.float64] * max(1.0, expected.abs().max().item())
    assert expected.abs().max().item() > 1e-3


def test_forward_over_reverse_through_nn_lstm_in_float32_is_refused_by_torch() -> None:
    """In float32 on the CPU nn.LSTM runs a fused oneDNN kernel without a forward-mode derivative (float64, above,
    takes the unfused path): the LSTM's table entry must be ``reverse``."""
    model, loss_fn, batch = CASES[IDS.index("lstm-tiny")].build(torch.float32)
    v = torch.ones(C.parameter_layout(model).size)
    with pytest.raises(NotImplementedError, match="forward AD"):
        C.hvp_forward_over_reverse(model, loss_fn, batch, v)
    assert C.HVP_PATH_BY_MODEL["CharLSTM"] == "reverse"


def test_the_scratch_models_hvp_takes_its_models_path(monkeypatch) -> None:
    """hessian=hvp's product goes the way the table says, and both ways give H v."""
    model, loss_fn, batch = CASES[4].build(torch.float64)  # the MLP
    scratch = C.ScratchModel(model, loss_fn)
    w = C.flat_parameters(model).detach().clone()
    v = torch.randn(w.numel(), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert scratch.path == C.hvp_path(model) == "reverse"
    reverse = scratch.hvp(batch, v, w)
    monkeypatch.setitem(C.HVP_PATH_BY_MODEL, "MLP", "forward")
    forward = C.ScratchModel(model, loss_fn)
    assert forward.path == "forward"
    assert torch.allclose(forward.hvp(batch, v, w), reverse, rtol=1e-10, atol=1e-12)


def test_forward_over_reverse_gives_the_same_product_from_concurrent_threads() -> None:
    """torch numbers forward-AD levels process-wide: unserialised, three threads' calls failed ("no level exists")
    or returned wrong products silently; under ``FORWARD_AD_LOCK`` every call equals the single-thread one."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    batch = (torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    v = torch.randn(C.flat_parameters(model).numel())
    expected = C.hvp_forward_over_reverse(model, F.cross_entropy, batch, v)
    outcomes: list[object] = []

    def call_repeatedly() -> None:
        for _ in range(60):
            try:
                outcomes.append(torch.equal(C.hvp_forward_over_reverse(model, F.cross_entropy, batch, v), expected))
            except RuntimeError as e:
                outcomes.append(e)

    threads = [threading.Thread(target=call_repeatedly) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [True] * 180, [o for o in outcomes if o is not True][:3]


def test_the_hvp_path_table_is_the_one_the_benchmark_chose() -> None:
    """scripts/results/hvp_paths.md (``scripts/bench_hvp.py``) names the exact path each shipped model's
    ``hessian=hvp`` takes: the table the clients read says the same for every model the file measured."""
    results = Path(__file__).resolve().parents[1] / "scripts" / "results" / "hvp_paths.md"
    lines = results.read_text().splitlines()
    first = lines.index(next(line for line in lines if line.startswith("| model |")))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[first + 2 :])  # the per-model table
    measured = {}
    for cells in (line.split("|")[1:-1] for line in table):
        model, chosen = cells[0].strip(), cells[-1].strip()
        measured.setdefault(model.split(" (")[0], set()).add(chosen)
    assert set(measured) == set(C.HVP_PATH_BY_MODEL), measured
    for model, paths in measured.items():
        assert paths == {C.HVP_PATH_BY_MODEL[model]}, (model, paths)
    assert set(C.HVP_PATH_BY_MODEL.values()) <= set(C.HVP_PATHS)


@pytest.mark.parametrize("dtype", list(TOL), ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hessian_diag_equals_dense_diagonal(case: Case, dtype: torch.dtype, truth) -> None:
    model, loss_fn, batch = case.build(dtype)
    d = C.hessian_diag(model, loss_fn, batch)
    assert (d - truth[case.name, dtype].diagonal()).abs().max().item() <= TOL[dtype]


@pytest.mark.parametrize(
    "case, fast",
    [
        (
            c,
            c.name
            in {"ann-mse", "net-4x4-ce", "net-5x3-ce", "net-3ch-sum", "mlp-elu-ce", "frozen-param", "functional-loss"}
            | {"cnn-tiny"},
        )
        for c in CASES
    ],
    ids=IDS,
)
def test_diag_fast_path_taken_exactly_where_supported(case: Case, fast: bool) -> None:
    """Seed models, the CNN, frozen params and functional losses use BackPACK; unused params and BatchNorm fall
    back."""
    model, loss_fn, batch = case.build(torch.float64)
    assert (diag_backpack.diag_hessian(model, loss_fn, batch) is not None) == fast


@pytest.mark.slow
def test_diag_fast_path_follows_parameter_updates() -> None:
    """The cached BackPACK copy is refreshed from the live parameters on every call."""
    model, loss_fn, batch = CASES[1].build(torch.float64)
    for _ in range(2):
        d = diag_backpack.diag_hessian(model, loss_fn, batch)
        assert torch.allclose(d, dense_hessian(model, loss_fn, batch).diagonal(), atol=1e-10, rtol=0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5 * torch.randn_like(p))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fd_hvp_converges_to_hvp_as_delta_shrinks(case: Case) -> None:
    model, loss_fn, batch = case.build(torch.float64)
    v = torch.randn(C.parameter_layout(model).size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = C.hvp(model, loss_fn, batch, v)
    errors = [(C.fd_hvp(model, loss_fn, batch, v, delta) - exact).norm().item() for delta in (1e-1, 1e-2, 1e-3)]
    scale = exact.norm().item()
    assert errors[-1] <= 1e-4 * scale
    if errors[0] > 1e-9 * scale:  # not a quadratic (where fd is exact for every delta)
        assert errors[0] > errors[1] > errors[2]


def test_layout_reports_where_each_block_sits() -> None:
    """The (fc1.weight, fc2.bias) block of hessian(ANN) is where the layout says, in the seeds' tuple form too."""
    model, loss_fn, (x, y) = CASES[0].build(torch.float64)
    layout = C.parameter_layout(model)
    assert layout.names == ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
    assert [b.slice for b in layout.blocks] == [slice(0, 12), slice(12, 16), slice(16, 36), slice(36, 41)]
    H = C.hessian(model, loss_fn, (x, y))
    names = layout.names
    shapes = [p.shape for p in model.parameters()]

    def f(*flat_params: torch.Tensor) -> torch.Tensor:
        params = {n: t.view(s) for n, t, s in zip(names, flat_params, shapes)}
        return loss_fn(functional_call(model, params, (x,)), y)

    blocks = torch.autograd.functional.hessian(f, tuple(p.detach().reshape(-1) for p in model.parameters()))
    w1, b2 = layout.block("fc1.weight"), layout.block("fc2.bias")
    assert torch.allclose(H[w1.slice, b2.slice], blocks[0][3], atol=1e-12, rtol=0)
    assert blocks[0][3].abs().max() > 0
    assert layout.describe().endswith("P = 41")


def test_layout_round_trips_and_excludes_frozen_and_buffers() -> None:
    model = WithBatchNorm()
    model.fc1.weight.requires_grad_(False)
    layout = C.parameter_layout(model)
    assert "fc1.weight" not in layout.names and not any("running" in n for n in layout.names)
    vec = torch.arange(layout.size, dtype=torch.float32)
    assert torch.equal(layout.flatten(layout.unflatten(vec)), vec)
    with pytest.raises(ValueError, match="length P=37"):
        layout.unflatten(torch.zeros(3))


def seed_diagonal_loop(model: nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    """The first seed's recipe, kept here as the reference: for each parameter element, one more backward of
    its gradient entry, keeping that element's own second derivative (weights and biases handled apart)."""
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params, retain_graph=True, create_graph=True)
    out = []
    for k, gk in enumerate(grads):
        hk = torch.zeros_like(gk)
        for i in range(gk.size(0)):
            if gk.dim() == 2:
                for j in range(gk.size(1)):
                    hk[i, j] = torch.autograd.grad(gk[i][j], params, retain_graph=True)[k][i, j]
            else:
                hk[i] = torch.autograd.grad(gk[i], params, retain_graph=True)[k][i]
        out.append(hk)
    return out


def test_seed_example_diagonal_equals_seed_loop() -> None:
    """The first seed's own example: ANN, data [1, 2, 3], label [1, 1, 5, 7, 8], MSE (unbatched input)."""
    torch.manual_seed(0)
    model = ANN()
    data = torch.tensor([1, 2, 3], dtype=torch.float)
    label = torch.tensor([1, 1, 5, 7, 8], dtype=torch.float)
    loss_fn = nn.MSELoss()
    reference = torch.cat([h.reshape(-1) for h in seed_diagonal_loop(model, loss_fn(model(data), label))])
    ours = C.hessian_diag(model, loss_fn, (data, label))
    assert torch.allclose(ours, reference, atol=1e-6, rtol=1e-6)
    assert reference.abs().max() > 0.1  # the seed's diagonal is not trivially zero for this example
    # The example's Hessian has off-diagonal mass the diagonal mode ignores: the modes really differ.
    H = C.hessian(model, loss_fn, (data, label))
    assert (H - torch.diag(H.diagonal())).abs().max() > 0.1


def test_memory_guard_refuses_net_28x28_before_allocating() -> None:
    model = Net(28, 28)
    assert C.parameter_layout(model).size == 125_765
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 5, (4,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(C.HessianTooLargeError) as err:
        C.hessian(model, nn.CrossEntropyLoss(), (x, y), max_memory_gb=16)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    msg = str(err.value)
    assert "125,765" in msg and "63.3" in msg and "16.00 GB" in msg and "hessian=hvp" in msg
    assert grown_mb < 200  # nothing of Hessian size was touched
    with pytest.raises(C.HessianTooLargeError):  # correction(exact) goes through the same guard
        C.correction("exact", model, nn.CrossEntropyLoss(), (x, y), torch.zeros(125_765), 0.1, max_memory_gb=16)


def test_default_budget_is_half_the_available_memory(monkeypatch) -> None:
    monkeypatch.setattr(dense, "available_memory_bytes", lambda: 24 * 10**9)
    assert C.default_memory_budget_gb() == pytest.approx(12.0)
    with pytest.raises(C.HessianTooLargeError, match="12.00 GB"):
        C.check_hessian_fits(125_765, torch.float32)
    C.check_hessian_fits(23_365, torch.float32)  # Net(12, 12): 2.2 GB fits


CALLS = {
    "hessian": lambda m, lf, b, v: C.hessian(m, lf, b),
    "hvp": lambda m, lf, b, v: C.hvp(m, lf, b, v),
    "fd_hvp": lambda m, lf, b, v: C.fd_hvp(m, lf, b, v, 1e-3),
    "hessian_diag": lambda m, lf, b, v: C.hessian_diag(m, lf, b),
    "gradient": lambda m, lf, b, v: C.gradient(m, lf, b),
    **{
        f"correction-{mode}": functools.partial(lambda mode, m, lf, b, v: C.correction(mode, m, lf, b, v, 0.1), mode)
        for mode in C.MODES
    },
}


def assert_same_snapshot(a: dict, b: dict) -> None:
    assert a["training"] == b["training"]
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert torch.equal(a["state"][k], b["state"][k]), k
    for k in a["grads"]:
        assert (a["grads"][k] is None) == (b["grads"][k] is None), k
        if a["grads"][k] is not None:
            assert torch.equal(a["grads"][k], b["grads"][k]), k


@pytest.mark.parametrize("call", list(CALLS), ids=list(CALLS))
@pytest.mark.parametrize("case", [CASES[1], CASES[6], CASES[8]], ids=["net", "unused", "batchnorm"])
def test_every_call_leaves_the_model_bit_for_bit_unchanged(case: Case, call: str) -> None:
    model, loss_fn, batch = case.build(torch.float32)
    model.train()
    first = next(model.children())
    first.eval()  # a mixed train/eval state must survive too
    next(model.parameters()).grad = torch.full_like(next(model.parameters()), 0.25)  # stale .grad must survive
    before = C.snapshot(model)
    v = torch.randn(C.parameter_layout(model).size)
    CALLS[call](model, loss_fn, batch, v)
    assert_same_snapshot(before, C.snapshot(model))


def test_correction_modes_against_their_definitions(truth) -> None:
    case = CASES[1]
    model, loss_fn, batch = case.build(torch.float64)
    H = truth[case.name, torch.float64]
    g = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    alpha = 0.3
    expected = g - alpha * H @ g
    for mode in ("exact", "hvp"):
        assert torch.allclose(C.correction(mode, model, loss_fn, batch, g, alpha), expected, atol=1e-10, rtol=0)
    fd = C.correction("fd", model, loss_fn, batch, g, alpha, delta=1e-4)
    assert (fd - expected).norm() <= 1e-5 * expected.norm()
    diag = C.correction("diag", model, loss_fn, batch, g, alpha)
    assert torch.allclose(diag, (1 - alpha * H.diagonal()) * g, atol=1e-10, rtol=0)
    assert torch.equal(C.correction("fo", model, loss_fn, batch, g, alpha), g)
    assert (diag - expected).abs().max() > 1e-6  # diag is an approximation here, not the exact correction


def test_unknown_mode_is_a_clear_error() -> None:
    model, loss_fn, batch = CASES[0].build(torch.float32)
    with pytest.raises(ValueError, match=r"'bogus' is not one of: exact, hvp, fd, diag, fo"):
        C.correction("bogus", model, loss_fn, batch, torch.zeros(41), 0.1)


def test_bad_vectors_and_delta_are_clear_errors() -> None:
    model, loss_fn, batch = CASES[0].build(torch.float32)
    with pytest.raises(ValueError, match="length P=41"):
        C.hvp(model, loss_fn, batch, torch.zeros(40))
    with pytest.raises(ValueError, match="delta must be a positive"):
        C.fd_hvp(model, loss_fn, batch, torch.zeros(41), delta=0.0)


SCRATCH_CASES = [c for c in CASES if C.ScratchModel.supports(c.model())]


def test_scratch_model_applies_exactly_to_models_without_buffers() -> None:
    assert "batchnorm-train" not in [c.name for c in SCRATCH_CASES] and len(SCRATCH_CASES) == len(CASES) - 1
    with pytest.raises(ValueError, match="no buffers"):
        C.ScratchModel(WithBatchNorm(), nn.MSELoss())


@pytest.mark.parametrize("dtype", list(TOL), ids=["f64", "f32"])
@pytest.mark.parametrize("case", SCRATCH_CASES, ids=[c.name for c in SCRATCH_CASES])
def test_scratch_model_is_bit_for_bit_the_functional_path(case: Case, dtype: torch.dtype) -> None:
    """The local update's fast path computes exactly what gradient / hvp / fd_hvp compute (same floats)."""
    model, loss_fn, batch = case.build(dtype)
    gen = torch.Generator().manual_seed(11)
    layout = C.parameter_layout(model)
    w = C.flat_parameters(model) + 0.1 * torch.randn(layout.size, generator=gen, dtype=dtype)
    v = torch.randn(layout.size, generator=gen, dtype=dtype)
    scratch = C.ScratchModel(model, loss_fn)
    loss, grad = scratch.loss_and_gradient(batch, at=w)
    want_loss, want_grad = C.loss_and_gradient(model, loss_fn, batch, at=w)
    assert torch.equal(loss, want_loss) and torch.equal(grad, want_grad)
    assert torch.equal(C.flat_parameters(model), w)  # the model now holds the point
    exact = C.hvp if C.hvp_path(model) == "reverse" else C.hvp_forward_over_reverse  # the model's path (the CNN's)
    assert torch.equal(scratch.hvp(batch, v, at=w), exact(model, loss_fn, batch, v))
    C.set_flat_parameters(model, w)
    want_fd = C.fd_hvp(model, loss_fn, batch, v, 1e-3)
    assert torch.equal(scratch.fd_hvp(batch, v, at=w, delta=1e-3), want_fd)
    with pytest.raises(ValueError, match="delta must be a positive finite number"):
        scratch.fd_hvp(batch, v, at=w, delta=0.0)


# --------------------------------------------------------------------------------------------------------------
# Functional losses on the one-pass diagonal
# --------------------------------------------------------------------------------------------------------------

FUNCTIONAL_LOSSES = {
    "F.cross_entropy": (F.cross_entropy, "ce"),
    "F.cross_entropy-sum": (functools.partial(F.cross_entropy, reduction="sum"), "ce"),
    "F.cross_entropy-mean-partial": (functools.partial(F.cross_entropy, reduction="mean"), "ce"),
    "F.mse_loss": (F.mse_loss, "mse"),
    "F.mse_loss-sum": (functools.partial(F.mse_loss, reduction="sum"), "mse"),
}


@pytest.mark.parametrize("name", list(FUNCTIONAL_LOSSES))
def test_functional_losses_take_the_one_pass_diagonal_and_match_dense(name: str, recwarn) -> None:
    loss_fn, kind = FUNCTIONAL_LOSSES[name]
    case = CASES[1] if kind == "ce" else CASES[0]  # Net(4, 4) with labels, or the ANN with regression targets
    model, _, batch = case.build(torch.float64)
    fast = diag_backpack.diag_hessian(model, loss_fn, batch)
    assert fast is not None
    assert (fast - dense_hessian(model, loss_fn, batch).diagonal()).abs().max().item() <= 1e-10
    assert not [w for w in recwarn if issubclass(w.category, C.DiagFallbackWarning)]


@pytest.mark.parametrize(
    "loss_fn, reason",
    [
        (lambda out, y: F.cross_entropy(out, y), "is not nn.MSELoss, nn.CrossEntropyLoss"),
        (functools.partial(F.cross_entropy, label_smoothing=0.1), "only reduction='mean' or 'sum'"),
        (nn.CrossEntropyLoss(label_smoothing=0.1), "with default options"),
    ],
    ids=["lambda", "partial-label-smoothing", "module-label-smoothing"],
)
def test_diag_fallback_says_why_once_and_stays_exact(loss_fn, reason: str, monkeypatch) -> None:
    monkeypatch.setattr(diagonal, "_DIAG_FALLBACK_WARNED", set())
    model, _, batch = CASES[4].build(torch.float64)  # the small MLP: the fallback is quick
    with pytest.warns(C.DiagFallbackWarning, match=reason) as record:
        d = C.hessian_diag(model, loss_fn, batch)
        C.hessian_diag(model, loss_fn, batch)  # the same reason again: no second warning
    assert len([w for w in record if issubclass(w.category, C.DiagFallbackWarning)]) == 1
    assert "P = 137" in str(record[0].message)
    assert (d - dense_hessian(model, loss_fn, batch).diagonal()).abs().max().item() <= 1e-10


def test_diag_fallback_for_an_unsupported_layer_names_it(monkeypatch) -> None:
    monkeypatch.setattr(diagonal, "_DIAG_FALLBACK_WARNED", set())
    model, loss_fn, batch = CASES[8].build(torch.float64)
    with pytest.warns(C.DiagFallbackWarning, match="BatchNorm1d layer"):
        C.hessian_diag(model, loss_fn, batch)


class Idiom(nn.Module):
    """Conv → activation → batch flatten → Linear, the activation and the flatten written as ``forward``."""

    def __init__(self, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 2)
        self.fc = nn.Linear(2 * 3 * 3, 4)
        self._forward = forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self, x)


#: Models as people write them: each idiom BackPACK's one-pass diagonal must take (issue 24 §5).
IDIOMS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "view-size-of-input": lambda m, x: m.fc(F.relu(m.conv(x)).view(x.size(0), -1)),
    "view-shape-of-input": lambda m, x: m.fc(torch.relu(m.conv(x)).view(x.shape[0], -1)),
    "reshape-size-tuple": lambda m, x: m.fc(m.conv(x).relu().reshape((x.size()[0], -1))),
    "view-size-of-layer": lambda m, x: (lambda h: m.fc(F.elu(h).view(h.size(0), -1)))(m.conv(x)),
    "torch.flatten": lambda m, x: m.fc(torch.flatten(F.elu(m.conv(x), 0.5), 1)),
    "x.flatten": lambda m, x: m.fc(torch.tanh(m.conv(x)).flatten(1)),
    "x.flatten-kwargs": lambda m, x: m.fc(torch.sigmoid(m.conv(x)).flatten(start_dim=1, end_dim=-1)),
    "F.leaky_relu": lambda m, x: m.fc(F.leaky_relu(m.conv(x), negative_slope=0.2).flatten(1)),
    "F.selu-x.tanh": lambda m, x: torch.tanh(m.fc(F.selu(m.conv(x)).flatten(1))),
    "x.sigmoid": lambda m, x: m.fc(m.conv(x).sigmoid().flatten(1)),
}


@pytest.mark.parametrize("name", list(IDIOMS))
def test_diag_one_pass_takes_the_usual_idioms_and_matches_dense(name: str) -> None:
    torch.manual_seed(11)
    model = Idiom(IDIOMS[name]).double()
    gen = torch.Generator().manual_seed(12)
    batch = (torch.randn(5, 1, 4, 4, generator=gen, dtype=torch.float64), torch.randint(0, 4, (5,), generator=gen))
    loss_fn = nn.CrossEntropyLoss()
    fast, why = diag_backpack.diag_hessian_or_reason(model, loss_fn, batch)
    assert fast is not None, why
    dense = dense_hessian(model, loss_fn, batch).diagonal()
    assert dense.abs().max().item() > 1e-3
    assert (fast - dense).abs().max().item() <= 1e-10


@pytest.mark.parametrize(
    "forward, reason",
    [
        (lambda m, x: m.fc(F.relu(m.conv(x), inplace=True).flatten(1)), "calls relu"),
        (lambda m, x: m.fc(m.conv(x).flatten(0).view(5, -1)), "calls flatten"),
        (lambda m, x: m.fc(m.conv(x).view(m.fc.weight.size(0) + 1, -1)), "calls fc.weight"),
        (lambda m, x: m.fc(F.gelu(m.conv(x)).flatten(1)), "calls gelu"),
    ],
    ids=["inplace-relu", "flatten-from-0", "view-size-of-a-weight", "gelu"],
)
def test_diag_one_pass_leaves_what_is_not_a_layer_to_the_exact_fallback(forward, reason: str) -> None:
    """Forms that are not exactly a supported layer keep their node, so the graph check sends them to the row
    loop (still exact: test_hessian_diag_equals_dense_diagonal)."""
    model = Idiom(forward).double()
    batch = (torch.randn(5, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (5,)))
    fast, why = diag_backpack.diag_hessian_or_reason(model, nn.CrossEntropyLoss(), batch)
    assert fast is None and reason in why


# --------------------------------------------------------------------------------------------------------------
# Top eigenvalues
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_top_eigenvalues_match_dense_eigvalsh(case: Case, truth) -> None:
    """k = 3 largest (algebraic) eigenvalues, descending, to 1e-6 relative in float64, at tol=0 (machine precision);
    Lanczos for P > 64, the dense route below; fewer products than P once Lanczos applies."""
    model, loss_fn, batch = case.build(torch.float64)
    expected = torch.linalg.eigvalsh(truth[case.name, torch.float64]).flip(0)[:3]
    before = C.snapshot(model)
    spectrum = C.hessian_spectrum(model, loss_fn, batch, 3, tol=0)
    assert spectrum.values.dtype == torch.float64 and spectrum.values.shape == (3,)
    assert torch.all(spectrum.values[:-1] >= spectrum.values[1:])
    scale = expected.abs().max().item()
    assert (spectrum.values - expected).abs().max().item() <= 1e-6 * scale
    p = C.parameter_layout(model).size
    assert spectrum.products == p if p <= C.DENSE_SPECTRUM_MAX_P else spectrum.products < p
    assert_same_snapshot(before, C.snapshot(model))


@pytest.mark.slow
def test_top_eigenvalue_at_a_point_and_its_tolerance() -> None:
    """``at`` moves the Hessian (the model stays put); a loose tol is cheaper and still within it; the same seed
    gives the same value."""
    model, loss_fn, batch = CASES[1].build(torch.float64)
    w = C.flat_parameters(model) + 0.3 * torch.randn(C.parameter_layout(model).size, dtype=torch.float64)
    ref = Net(4, 4).to(torch.float64)
    C.set_flat_parameters(ref, w)
    expected = torch.linalg.eigvalsh(dense_hessian(ref, loss_fn, batch))[-1].item()
    tight = C.hessian_spectrum(model, loss_fn, batch, 1, at=w, tol=0)
    loose = C.hessian_spectrum(model, loss_fn, batch, 1, at=w, tol=1e-3)
    assert tight.values[0].item() == pytest.approx(expected, rel=1e-9)
    assert loose.values[0].item() == pytest.approx(expected, rel=1e-3)
    assert loose.products <= tight.products
    assert torch.equal(C.top_eigenvalues(model, loss_fn, batch, at=w, tol=1e-3), loose.values)


@pytest.mark.slow
def test_top_eigenvalues_in_float32_and_bad_arguments() -> None:
    model, loss_fn, batch = CASES[1].build(torch.float32)
    top = C.top_eigenvalues(model, loss_fn, batch, 2, tol=1e-6)
    m64, b64 = copy.deepcopy(model).to(torch.float64), (batch[0].to(torch.float64), batch[1])
    expected = torch.linalg.eigvalsh(dense_hessian(m64, loss_fn, b64)).flip(0)[:2]
    assert torch.allclose(top, expected, rtol=1e-4, atol=0)
    for bad, message in (({"k": 0}, "k must be"), ({"k": 10**6}, "only P=2885"), ({"tol": 1.5}, "tol must be")):
        with pytest.raises(ValueError, match=message):
            C.top_eigenvalues(model, loss_fn, batch, **bad)
    with pytest.raises(RuntimeError, match="did not reach tol"):
        C.top_eigenvalues(model, loss_fn, batch, 3, tol=0, max_restarts=1)


def test_hessian_operator_counts_products_and_equals_hvp(truth) -> None:
    model, loss_fn, batch = CASES[2].build(torch.float64)
    op = C.HessianOperator(model, loss_fn, batch)
    v = torch.randn(op.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for _ in range(2):  # the kept graph serves every product
        assert torch.allclose(op.matvec(v), truth[CASES[2].name, torch.float64] @ v, atol=1e-10, rtol=0)
    assert op.products == 2
