"""What an algorithm declares about itself, once, for the rest of the program (pure Python: no torch, no Flower).

Every algorithm module in :mod:`perfedavg.algorithms` (and every plugin registered under the entry-point group
``perfedavg.algorithms``) gives its :class:`~perfedavg.algorithms.base.Algorithm` subclass a :class:`Declaration`:
its name and title, the keys it reads under ``algorithm.*`` (defaults, ranges, help), which of the shared run keys
it reads, whether it uses the Hessian mode and whether it keeps per-client state, and its tuning search space.
Config validation, resume compatibility, the HPARAMS record, the tuner, the reports and the docs' key table read it
(:func:`perfedavg.algorithms.declarations`); nothing else lists per-algorithm knowledge.

This module is imported by the command line's checks, before PyTorch: keep it free of heavy imports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: The shared run keys whose use depends on the algorithm (every other top-level key is read by every run).
#: ``adapt_steps`` is read by every algorithm that keeps the base class's personalize-then-evaluate.
ALGORITHM_DEPENDENT_KEYS: tuple[str, ...] = (
    "alpha",
    "beta",
    "adapt_steps",
    "adapt_batch",
    "delta",
    "diagnostics.every",
    "stability.every",
    "stability.safeguard",
)

#: The Hessian modes of an algorithm that uses one (``hessian=…``); each is a method of its own in the result tables,
#: in this order: first order, the Hessian-free estimates (the paper's fd, the exact product), then the dense ones.
HESSIAN_MODES: tuple[str, ...] = ("fo", "fd", "hvp", "exact", "diag")
#: The Hessian-free modes: the paper's "HF" variant, estimated (fd) or exact (hvp).
HESSIAN_FREE_MODES: tuple[str, ...] = ("fd", "hvp")


@dataclass(frozen=True)
class Search:
    """A tuning range: ``[low, high]``, log-uniform if ``log``, integers if ``integer`` (Optuna through
    hydra-optuna-sweeper: :meth:`sweep` is the override's value)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def describe(self) -> str:
        """``log-uniform in [0.0003, 0.3]``, ``integers in [1, 10]``."""
        if self.integer:
            return f"integers in [{int(self.low)}, {int(self.high)}]"
        return f"{'log-uniform' if self.log else 'uniform'} in [{self.low:g}, {self.high:g}]"

    def sweep(self) -> str:
        """The Optuna sweeper's value for this range, e.g. ``tag(log, interval(0.0003, 0.3))``."""
        if self.integer:
            return f"int(interval({int(self.low)}, {int(self.high)}))"
        inner = f"interval({self.low:g}, {self.high:g})"
        return f"tag(log, {inner})" if self.log else inner


#: The step sizes' search range (α and β, log-uniform; the range every committed tuning used).
STEP_SEARCH = Search(3e-4, 0.3, log=True)


@dataclass(frozen=True)
class Key:
    """One key an algorithm reads under ``algorithm.<name>``: its default, its range and what it means.

    ``minimum``: the smallest allowed value (``None``: any finite number); ``strict``: the minimum itself is excluded
    (``λ > 0``) rather than allowed (``λ ≥ 0``). ``integer``: whole numbers only. ``search``: its tuning range (None:
    not tuned). ``symbol``: how tables name it (λ, K)."""

    name: str
    default: float | int
    help: str
    minimum: float | None = 0.0
    strict: bool = True
    integer: bool = False
    search: Search | None = None
    symbol: str = ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this key (``algorithm.<name>=<value>: must be …``), or ``None``."""
        kind = "integer" if self.integer else "number"
        at = f"algorithm.{self.name}={value}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{at}: must be a {kind}"
        if self.integer and not float(value).is_integer():
            return f"{at}: must be an integer"
        if not math.isfinite(value):
            return f"{at}: must be a finite {kind}"
        if self.minimum is None:
            return None
        if self.strict and not value > self.minimum:
            return f"{at}: must be a positive {kind}" if self.minimum == 0 else f"{at}: must be > {self.minimum:g}"
        if not self.strict and not value >= self.minimum:
            return f"{at}: must be ≥ {self.minimum:g} ({self.help})"
        return None


@dataclass(frozen=True)
class Declaration:
    """Everything the program needs to know about one algorithm besides its arithmetic.

    ``name``: its ``algorithm=`` value (and ``conf/algorithm/<name>.yaml``). ``title``: how tables and docs name it.
    ``keys``: what it reads under ``algorithm.*``. ``reads``: which of :data:`ALGORITHM_DEPENDENT_KEYS` it reads
    besides those its base class implies (:meth:`perfedavg.algorithms.base.Algorithm.reads`). ``uses_hessian``: it
    reads ``hessian`` (its methods are the Hessian modes: ``fo``, ``hvp``, …; ``delta`` with ``fd``, the memory budget
    with ``exact``). ``stateful``: it keeps one flat vector per client across rounds. ``search``: the tuning range of
    each shared key it tunes (α, β by default; its own keys' ranges are in ``keys``). ``reference``: the paper."""

    name: str
    title: str
    keys: tuple[Key, ...] = ()
    reads: frozenset[str] = frozenset({"alpha", "beta"})
    uses_hessian: bool = False
    stateful: bool = False
    search: dict[str, Search] = field(default_factory=lambda: {"alpha": STEP_SEARCH, "beta": STEP_SEARCH})
    reference: str = ""
    order: float = 100.0  # where tables and docs list it (the baselines first); ties by name

    def __post_init__(self) -> None:
        unknown = set(self.reads) - set(ALGORITHM_DEPENDENT_KEYS)
        if unknown:
            raise ValueError(f"algorithm {self.name}: reads {sorted(unknown)}; allowed: {ALGORITHM_DEPENDENT_KEYS}")
        names = [k.name for k in self.keys]
        if "name" in names or len(set(names)) != len(names):
            raise ValueError(f"algorithm {self.name}: its keys must be distinct and not 'name' ({names})")

    def key(self, name: str) -> Key | None:
        """Its key ``algorithm.<name>``, or ``None``."""
        return next((k for k in self.keys if k.name == name), None)

    def defaults(self) -> dict[str, float | int]:
        """``{key: default}`` of its ``algorithm.*`` keys."""
        return {k.name: k.default for k in self.keys}

    def search_space(self) -> dict[str, Search]:
        """Every key the tuner searches for it, by its full config name (``alpha``, ``algorithm.lam``, …)."""
        own = {f"algorithm.{k.name}": k.search for k in self.keys if k.search is not None}
        return {**self.search, **own}

    def methods(self) -> tuple[str, ...]:
        """The methods it gives the result tables: the Hessian modes if it uses one, else its name."""
        return HESSIAN_MODES if self.uses_hessian else (self.name,)

    def method_title(self, method: str) -> str:
        """How tables name one of its :meth:`methods`: its title, with the Hessian mode where it uses one (``FO``,
        ``HF, fd`` and ``HF, hvp`` as the Per-FedAvg paper's variants, else the mode)."""
        if not self.uses_hessian:
            return self.title
        if method == "fo":
            return f"{self.title} (FO)"
        return f"{self.title} (HF, {method})" if method in HESSIAN_FREE_MODES else f"{self.title} ({method})"
