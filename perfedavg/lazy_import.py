"""Modules imported on first use, so that reading an algorithm's declaration does not import PyTorch.

The command line names a mistake in about half a second; importing PyTorch takes two seconds more. Algorithm
modules (:mod:`perfedavg.algorithms`) hold their declaration (pure data, read by config validation) beside their
arithmetic (PyTorch): they bind the project's PyTorch modules (curvature, diagnostics) through :func:`lazy_import`,
a stand-in that imports the module normally on its first attribute access, and import ``torch`` itself inside the few
functions that name it. The stand-in is not put in ``sys.modules`` (the standard library's ``LazyLoader`` is: code
that scans ``sys.modules``, as ``inspect`` does while torch loads, then runs half-loaded modules).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _Deferred:
    """Module ``name``, imported (normally, under the import lock) the first time one of its attributes is read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<module {self._name!r}, imported on first use>"


def lazy_import(name: str) -> ModuleType:
    """Module ``name``: the loaded one if it is loaded already, else a stand-in that imports it on first use."""
    import sys

    loaded = sys.modules.get(name)
    return loaded if loaded is not None else _Deferred(name)  # type: ignore[return-value]
