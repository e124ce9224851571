"""The federated algorithms, one module each (pure torch; no Flower), behind one interface
(:class:`~perfedavg.algorithms.base.Algorithm`), each with its :class:`~perfedavg.algorithms.declaration.Declaration`:
FedAvg and its fine-tuned and compute-matched baselines (:mod:`~perfedavg.algorithms.fedavg`), Per-FedAvg
(:mod:`~perfedavg.algorithms.per_fedavg`), pFedMe (:mod:`~perfedavg.algorithms.pfedme`), Ditto
(:mod:`~perfedavg.algorithms.ditto`) and Local training (:mod:`~perfedavg.algorithms.local`).

Adding a method: a module in this package with an :class:`~perfedavg.algorithms.base.Algorithm` subclass that
declares itself (found by :func:`built_in`), and a ``conf/algorithm/<name>.yaml``; config validation, resume,
HPARAMS, the tuner and the reports read the declaration. An installed package adds one without touching this
package: an entry point in the group :data:`ENTRY_POINT_GROUP` naming its class
(``name = "my_package.my_module:MyAlgorithm"``); its config group option is made from its declaration
(docs/algorithms.md, "Adding a method").

Importing this package does not import PyTorch (the command line validates a config with the declarations alone).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from perfedavg.algorithms.base import (
    Algorithm,
    LocalResult,
    LocalSpec,
    evaluate,
    personalize,
    personalized_evaluation,
    sample_batch,
    spread_subset,
)
from perfedavg.algorithms.declaration import Declaration
from perfedavg.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from perfedavg.curvature import LossFn

#: The entry-point group through which an installed package adds an algorithm (its value: ``module:Class``).
ENTRY_POINT_GROUP = "perfedavg.algorithms"
#: Modules of this package that hold no algorithm.
_NOT_ALGORITHMS = frozenset({"base", "declaration"})

__all__ = [
    "built_in",
    "ENTRY_POINT_GROUP",
    "Algorithm",
    "Declaration",
    "LocalResult",
    "LocalSpec",
    "classes",
    "declaration_of",
    "declarations",
    "evaluate",
    "get",
    "local_update",
    "method_of",
    "method_overrides",
    "method_title",
    "methods",
    "personalize",
    "personalized_evaluation",
    "reads",
    "sample_batch",
    "spread_subset",
]


class PluginError(UserError, ValueError):
    """An installed algorithm plugin cannot be used (it does not load, or its declaration clashes)."""


def _declares(cls: object) -> bool:
    """True for an :class:`Algorithm` subclass with a declaration of its own (not only its parent's)."""
    return (
        isinstance(cls, type)
        and issubclass(cls, Algorithm)
        and isinstance(cls.__dict__.get("declaration"), Declaration)
    )


@functools.cache
def built_in() -> tuple[type[Algorithm], ...]:
    """The algorithms this package ships: every class that declares itself in a module of this package (imported
    without PyTorch), in their declared :attr:`~Declaration.order` (the baselines, Per-FedAvg, the other
    personalized methods)."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in _NOT_ALGORITHMS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found += [c for c in vars(module).values() if _declares(c) and c.__module__ == module.__name__]
    return tuple(sorted(found, key=lambda c: (c.declaration.order, c.declaration.name)))


@functools.cache
def classes() -> dict[str, type[Algorithm]]:
    """Every algorithm class by its name: the built-in ones, then those installed packages register under
    :data:`ENTRY_POINT_GROUP`. A plugin that fails to load, or that reuses a name, is an error naming it."""
    found: dict[str, type[Algorithm]] = {cls.declaration.name: cls for cls in built_in()}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"{ENTRY_POINT_GROUP} entry point {point.name} = {point.value}"
        try:
            cls = point.load()
        except Exception as e:  # noqa: BLE001 - any import error of a third-party package
            raise PluginError(f"{where}: cannot be loaded: {type(e).__name__}: {e}") from None
        if not _declares(cls):
            raise PluginError(f"{where}: is not an Algorithm subclass with its own `declaration`")
        name = cls.declaration.name
        if name in found:
            raise PluginError(f"{where}: declares algorithm {name!r}, which {found[name].__module__} already is")
        found[name] = cls
    return found


def declarations() -> dict[str, Declaration]:
    """Every algorithm's declaration by name (built-in first, then plugins)."""
    return {name: cls.declaration for name, cls in classes().items()}


def declaration_of(name: str) -> Declaration:
    """The declaration of algorithm ``name``; a ValueError naming the allowed ones otherwise."""
    return _class(name).declaration


def reads(name: str) -> frozenset[str]:
    """The algorithm-dependent shared keys algorithm ``name`` reads (:meth:`Algorithm.reads`)."""
    return _class(name).reads()


def methods() -> dict[str, tuple[str, Declaration]]:
    """Every method of the result tables: ``{method: (algorithm, declaration)}`` (Per-FedAvg's Hessian modes and
    every other algorithm by its name; :meth:`Declaration.methods`)."""
    return {m: (name, d) for name, d in declarations().items() for m in d.methods()}


def method_title(method: str) -> str:
    """How result tables name ``method`` (``fo``: ``Per-FedAvg (FO)``, ``ditto``: ``Ditto``); an unknown one as it
    is."""
    found = methods().get(method)
    return found[1].method_title(method) if found else method


def method_of(algorithm: str, hessian_mode: str) -> str:
    """The method a run of ``algorithm`` with ``hessian_mode`` belongs to: the mode for an algorithm that uses the
    Hessian, else the algorithm's name."""
    return str(hessian_mode) if declaration_of(str(algorithm)).uses_hessian else str(algorithm)


def method_overrides(method: str) -> list[str]:
    """The overrides that choose ``method`` (``hvp``: ``algorithm=perfedavg hessian=hvp``; ``ditto``:
    ``algorithm=ditto hessian=fo``, its Hessian mode unread)."""
    table = methods()
    if method not in table:
        raise ValueError(f"unknown method {method!r}; allowed: {', '.join(table)}")
    name, d = table[method]
    return [f"algorithm={name}", f"hessian={method if d.uses_hessian else 'fo'}"]


def _class(name: str) -> type[Algorithm]:
    found = classes()
    if name not in found:
        raise ValueError(f"algorithm {name!r} is not one of: {', '.join(found)}")
    return found[name]


def get(name: str) -> Algorithm:
    """The algorithm called ``name``; a ValueError naming the allowed ones otherwise."""
    return _class(name)()


def local_update(
    model: nn.Module,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
    spec: LocalSpec,
    generator: torch.Generator,
    *,
    diagnose: bool = False,
    state: Tensor | None = None,
) -> LocalResult:
    """``spec.algorithm``'s local update (:meth:`Algorithm.local_update`); a stateful algorithm without ``state``
    starts from the model's current weights as its state."""
    algorithm = get(spec.algorithm)
    if algorithm.stateful and state is None:
        from perfedavg import curvature

        state = algorithm.initial_state(curvature.flat_parameters(model))
    return algorithm.local_update(model, loss_fn, x, y, spec, generator, state=state, diagnose=diagnose)
