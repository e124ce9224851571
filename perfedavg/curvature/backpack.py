"""Exact Hessian diagonals in one extended backward pass with BackPACK's ``DiagHessian``.

Why BackPACK: it propagates the exact (symmetric factorisation of the) loss Hessian layer by layer, so the whole
diagonal costs about one backward pass with a few extra matrix products, instead of one backward per parameter
(the first seed's loop: 14.6 s for Net(12, 12) on a 2-core CPU; this path: 3 ms, see docs/curvature.md). It is only
exact when every operation between input and loss is a layer BackPACK differentiates, so :func:`diag_hessian` works on
a traced copy of the model and returns ``None`` (the caller then uses the exact general fallback) unless:

* the loss is an ``nn.MSELoss`` or ``nn.CrossEntropyLoss`` module with default options and ``mean``/``sum``, or
  the functional ``F.mse_loss`` / ``F.cross_entropy`` (also through ``functools.partial`` with only ``reduction``
  fixed), which are the same function and are run as those modules;
* the inputs are batched (``dim ≥ 2``);
* after tracing, every node of the graph is a call of a module BackPACK's ``DiagHessian`` supports. Models as
  people write them are rewritten to such modules first: a batch flatten (``x.view(x.size(0), -1)`` as in the
  seed's Net, also with ``reshape``, ``x.shape[0]`` or the size of the input or another layer's output,
  ``torch.flatten(x, 1)``, ``x.flatten(1)``) becomes ``nn.Flatten()``, and activations called as functions or
  methods (``F.relu``, ``torch.relu``, ``x.relu()``, ``F.elu``, ``F.selu``, ``F.leaky_relu``, ``torch.tanh``,
  ``torch.sigmoid``, …; not in place) become their modules;
* every trainable parameter receives a diagonal.

The model itself is never touched: BackPACK's hooks go on a deep copy.
"""

from __future__ import annotations

import copy
import functools
import operator
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from perfedavg.curvature.layout import Batch

#: Layers BackPACK's ``DiagHessian`` differentiates exactly (a subset of its extensions: the ones this project
#: uses or that are parameter-free and elementwise/linear). Anything else in the graph means the fallback.
SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Flatten,
    nn.Identity,
    nn.ELU,
    nn.SELU,
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.LogSigmoid,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.Dropout,
)


def _batch_size_of(node: Any) -> fx.Node | None:
    """The tensor whose batch size ``node`` is: ``t.size(0)``, ``t.size()[0]`` or ``t.shape[0]``, for ``t`` the
    model's input or a layer's output (every supported layer keeps the batch axis first, so any of them has the
    same size 0 as the input); else ``None``."""
    if not isinstance(node, fx.Node):
        return None
    source = None
    if node.op == "call_method" and node.target == "size":  # t.size(0) or t.size(dim=0)
        dim = node.args[1] if len(node.args) == 2 else node.kwargs.get("dim") if len(node.args) == 1 else None
        source = node.args[0] if dim == 0 else None
    elif node.op == "call_function" and node.target is operator.getitem and node.args[1:] == (0,):
        whole = node.args[0]
        if isinstance(whole, fx.Node) and whole.op == "call_method" and whole.target == "size":
            source = whole.args[0] if len(whole.args) == 1 and not whole.kwargs else None
        elif isinstance(whole, fx.Node) and whole.op == "call_function" and whole.target is getattr:
            source = whole.args[0] if whole.args[1:] == ("shape",) else None
    if isinstance(source, fx.Node) and source.op in ("placeholder", "call_module"):
        return source
    return None


def _is_batch_flatten(node: fx.Node) -> bool:
    """``x.view(n, -1)`` or ``x.reshape(n, -1)`` (also with the shape as one tuple) where ``n`` is the batch size
    (:func:`_batch_size_of`): flatten everything but the batch axis."""
    if node.op != "call_method" or node.target not in ("view", "reshape") or node.kwargs:
        return False
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = tuple(shape[0])
    return len(shape) == 2 and shape[1] == -1 and _batch_size_of(shape[0]) is not None


@dataclass(frozen=True)
class _Rewrite:
    """A function or tensor method that is exactly a supported layer for some of its arguments: the names of its
    arguments after the input (in positional order) with their defaults, and the layer for the bound arguments
    (``None`` where these arguments are not that layer's computation)."""

    names: tuple[str, ...]
    defaults: dict[str, Any]
    layer: Callable[[dict[str, Any]], nn.Module | None]


def _out_of_place(layer: Callable[[dict[str, Any]], nn.Module]) -> Callable[[dict[str, Any]], nn.Module | None]:
    # An in-place activation also changes its input for the input's other users: not rewritten.
    return lambda a: None if a.get("inplace") else layer(a)


_RELU = _Rewrite(("inplace",), {"inplace": False}, _out_of_place(lambda a: nn.ReLU()))
_ELU = _Rewrite(("alpha", "inplace"), {"alpha": 1.0, "inplace": False}, _out_of_place(lambda a: nn.ELU(a["alpha"])))
_SELU = _Rewrite(("inplace",), {"inplace": False}, _out_of_place(lambda a: nn.SELU()))
_LEAKY = _Rewrite(
    ("negative_slope", "inplace"),
    {"negative_slope": 0.01, "inplace": False},
    _out_of_place(lambda a: nn.LeakyReLU(a["negative_slope"])),
)
_TANH = _Rewrite((), {}, lambda a: nn.Tanh())
_SIGMOID = _Rewrite((), {}, lambda a: nn.Sigmoid())
_FLATTEN = _Rewrite(
    ("start_dim", "end_dim"),
    {"start_dim": 0, "end_dim": -1},
    lambda a: nn.Flatten() if a["start_dim"] == 1 and a["end_dim"] == -1 else None,
)

#: Functions (``F.relu(x)``, ``torch.flatten(x, 1)``, …) and tensor methods (``x.relu()``, ``x.flatten(1)``, …)
#: that compute what a supported layer computes, rewritten to that layer before the graph is checked.
FUNCTION_REWRITES: dict[Any, _Rewrite] = {
    F.relu: _RELU,
    torch.relu: _RELU,
    F.elu: _ELU,
    F.selu: _SELU,
    torch.selu: _SELU,
    F.leaky_relu: _LEAKY,
    torch.tanh: _TANH,
    F.tanh: _TANH,
    torch.sigmoid: _SIGMOID,
    F.sigmoid: _SIGMOID,
    torch.flatten: _FLATTEN,
}
METHOD_REWRITES: dict[str, _Rewrite] = {
    "relu": _RELU,
    "tanh": _TANH,
    "sigmoid": _SIGMOID,
    "flatten": _FLATTEN,
}


def _equivalent_layer(node: fx.Node) -> nn.Module | None:
    """The supported layer that computes ``node`` from its first argument, or ``None``."""
    if _is_batch_flatten(node):
        return nn.Flatten()
    if node.op == "call_function":
        rewrite = FUNCTION_REWRITES.get(node.target)  # type: ignore[call-overload]
    elif node.op == "call_method":
        rewrite = METHOD_REWRITES.get(str(node.target))
    else:
        return None
    if rewrite is None or not node.args or not isinstance(node.args[0], fx.Node):
        return None
    extra = node.args[1:]
    if len(extra) > len(rewrite.names) or set(node.kwargs) - set(rewrite.names):
        return None
    bound = {**rewrite.defaults, **dict(zip(rewrite.names, extra)), **node.kwargs}
    if any(isinstance(v, fx.Node) for v in bound.values()):
        return None  # an argument computed in the graph: not a constant layer
    return rewrite.layer(bound)


def _trace_for_backpack(model: nn.Module) -> tuple[fx.GraphModule | None, str]:
    """A traced deep copy of ``model`` made of supported layers only, or ``(None, why not)``. Functional forms of
    supported layers (:data:`FUNCTION_REWRITES`, :data:`METHOD_REWRITES`, batch flattens by view/reshape) are
    rewritten to the layers first."""
    try:
        traced = fx.symbolic_trace(copy.deepcopy(model))
    except Exception as e:  # noqa: BLE001 - any model torch.fx cannot trace simply takes the fallback
        return None, f"torch.fx cannot trace {type(model).__name__} ({type(e).__name__})"
    graph = traced.graph
    for i, node in enumerate(list(graph.nodes)):  # in order: a rewritten node's users see the layer's output
        layer = _equivalent_layer(node)
        if layer is not None:
            name = f"_perfedavg_{type(layer).__name__.lower()}_{i}"
            traced.add_submodule(name, layer)
            with graph.inserting_before(node):
                new = graph.call_module(name, (node.args[0],))
            node.replace_all_uses_with(new)
            graph.erase_node(node)
    graph.eliminate_dead_code()
    traced.recompile()
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op != "call_module":
            what = getattr(node.target, "__name__", str(node.target))
            return None, f"{type(model).__name__} calls {what} outside a module BackPACK's DiagHessian differentiates"
        layer = type(traced.get_submodule(node.target))
        if layer not in SUPPORTED_LAYERS:
            return None, f"{type(model).__name__} has a {layer.__name__} layer, which DiagHessian does not support"
    return traced, ""


#: The functional losses that are exactly a supported loss module: function → module class.
FUNCTIONAL_LOSSES: dict[Callable[..., Tensor], type[nn.Module]] = {
    F.mse_loss: nn.MSELoss,
    F.cross_entropy: nn.CrossEntropyLoss,
}


def _loss_supported(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> bool:
    if type(loss_fn) is nn.MSELoss:
        return loss_fn.reduction in ("mean", "sum")
    if type(loss_fn) is nn.CrossEntropyLoss:
        return (
            loss_fn.reduction in ("mean", "sum")
            and loss_fn.weight is None
            and loss_fn.ignore_index == -100
            and loss_fn.label_smoothing == 0.0
        )
    return False


def loss_module(loss_fn: Callable[[Tensor, Tensor], Tensor]) -> tuple[nn.Module | None, str]:
    """The loss module BackPACK runs for ``loss_fn``, or ``(None, why not)``.

    A supported module is itself; ``F.mse_loss`` / ``F.cross_entropy``, bare or as ``functools.partial`` with no
    positional arguments and at most ``reduction="mean"|"sum"``, become ``nn.MSELoss`` / ``nn.CrossEntropyLoss``
    with that reduction (the same function).
    """
    if isinstance(loss_fn, nn.Module):
        if _loss_supported(loss_fn):
            return loss_fn, ""
        return None, f"the loss module {loss_fn!r} is not an nn.MSELoss or nn.CrossEntropyLoss with default options"
    func, kwargs = loss_fn, {}
    if isinstance(loss_fn, functools.partial):
        if loss_fn.args:
            inner = getattr(loss_fn.func, "__name__", repr(loss_fn.func))
            return None, f"functools.partial({inner}) fixes positional arguments"
        func, kwargs = loss_fn.func, dict(loss_fn.keywords)
    module = FUNCTIONAL_LOSSES.get(func)  # type: ignore[call-overload]
    name = getattr(func, "__name__", repr(func))
    if module is None:
        return None, f"the loss {name} is not nn.MSELoss, nn.CrossEntropyLoss, F.mse_loss or F.cross_entropy"
    if set(kwargs) - {"reduction"} or kwargs.get("reduction", "mean") not in ("mean", "sum"):
        return None, f"{name} with {kwargs} (only reduction='mean' or 'sum' is supported)"
    return module(reduction=kwargs.get("reduction", "mean")), ""


@dataclass
class _Extended:
    """A BackPACK-extended traced copy of a model, reusable while the model's structure is unchanged."""

    key: tuple
    net: nn.Module
    loss: nn.Module
    params: list[Tensor]  # the copy's trainable parameters, in the original's layout order
    buffers: list[tuple[Tensor, Tensor]]  # (original buffer, copy's buffer)


#: One extended copy per live model (tracing and extending cost ~20 ms; the pass itself ~3 ms for Net(12, 12)).
_CACHE: weakref.WeakKeyDictionary[nn.Module, _Extended] = weakref.WeakKeyDictionary()


def _structure_key(model: nn.Module, loss_fn: nn.Module) -> tuple:
    params = tuple((n, tuple(p.shape), p.dtype, p.device, p.requires_grad) for n, p in model.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers())
    modes = tuple(m.training for m in model.modules())
    return params, buffers, modes, repr(loss_fn), loss_fn.reduction


def _extended(model: nn.Module, loss_fn: nn.Module) -> tuple[_Extended | None, str]:
    key = _structure_key(model, loss_fn)
    cached = _CACHE.get(model)
    if cached is not None and cached.key == key:
        return cached, ""
    traced, why = _trace_for_backpack(model)
    if traced is None:
        return None, why
    from backpack import extend

    # The traced copy keeps the module tree, so the original's names find its parameters, in layout order; a
    # parameter the forward never uses is not in it (the fallback gives its rows, which are zero).
    traced_names = {n for n, _ in traced.named_parameters()}
    unused = [n for n, p in model.named_parameters() if p.requires_grad and n not in traced_names]
    if unused:
        return None, f"{type(model).__name__}'s forward does not use {', '.join(unused)}"
    params = [traced.get_parameter(n) for n, p in model.named_parameters() if p.requires_grad]
    buffers = [(b, traced.get_buffer(n)) for n, b in model.named_buffers()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BackPACK warns about converter details that do not affect results
        try:
            net = extend(traced, use_converter=True)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError) as e:
            return None, f"BackPACK cannot extend {type(model).__name__} ({type(e).__name__}: {e})"
    entry = _Extended(key, net, extend(copy.deepcopy(loss_fn)), params, buffers)
    _CACHE[model] = entry
    return entry, ""


def diag_hessian_or_reason(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], batch: Batch
) -> tuple[Tensor | None, str]:
    """``(the exact Hessian diagonal [P] by BackPACK, "")``, or ``(None, why the one-pass path does not apply)``.

    Cost: one forward and one extended backward on a cached copy whose parameters are refreshed from the model
    (the first call per model also traces and extends the copy, ~20 ms). One call at a time in a process: BackPACK
    keeps its active extensions in global state, so the in-process pool's threads take turns here.
    """
    with _BACKPACK_LOCK:
        return _diag_hessian_or_reason(model, loss_fn, batch)


#: BackPACK's ``backpack(...)`` context is process-global: one extended pass at a time.
_BACKPACK_LOCK = threading.RLock()


def _diag_hessian_or_reason(
    model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], batch: Batch
) -> tuple[Tensor | None, str]:
    inputs, targets = batch
    loss, why = loss_module(loss_fn)
    if loss is None:
        return None, why
    if inputs.dim() < 2:
        return None, f"the inputs have shape {tuple(inputs.shape)}, not a batch (dim ≥ 2)"
    entry, why = _extended(model, loss)
    if entry is None:
        return None, why
    from backpack import backpack
    from backpack.extensions import DiagHessian

    with torch.no_grad():
        for src, dst in zip((p for p in model.parameters() if p.requires_grad), entry.params):
            dst.copy_(src)
            dst.grad = None
            if hasattr(dst, "diag_h"):
                del dst.diag_h
        for src, dst in entry.buffers:
            dst.copy_(src)
    try:
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")
            out = entry.loss(entry.net(inputs), targets)
            with backpack(DiagHessian()):
                out.backward()
    except (NotImplementedError, RuntimeError, IndexError, ValueError) as e:
        _CACHE.pop(model, None)
        return None, f"BackPACK's DiagHessian pass failed ({type(e).__name__}: {e})"
    diags = [getattr(p, "diag_h", None) for p in entry.params]
    if any(d is None for d in diags):
        return None, "BackPACK gave no diagonal for some trainable parameters"
    return torch.cat([d.detach().reshape(-1) for d in diags]), ""


def diag_hessian(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], batch: Batch) -> Tensor | None:
    """The exact Hessian diagonal ``[P]`` (layout order) by BackPACK, or ``None`` where it does not apply
    (:func:`diag_hessian_or_reason` says why)."""
    return diag_hessian_or_reason(model, loss_fn, batch)[0]
