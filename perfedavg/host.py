"""The machine a run computed on, as its ``metrics.json`` records it (``"host"``) and ``perfedavg-report`` names it.

The bits of a second-order run at a large step can depend on the CPU and the kernels torch picks for it
(docs/results.md, "HF at MNIST's tuned step sizes depends on the machine"), so every run says where it ran: the CPU
model, the cores, torch's version and the instruction set its CPU kernels use (``ATEN_CPU_CAPABILITY`` and
``MKL_ENABLE_INSTRUCTIONS`` too, where set). It is the machine of the process that writes ``metrics.json``, the
server's: in a simulation (in-process or a local Ray) every client computed there too; with a Ray cluster or real
clients (docs/scaling-out.md) they may have run elsewhere. A resumed run records the machine that finished it.
Cost: one read of ``/proc/cpuinfo``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Environment variables that change which CPU kernels torch and MKL run, recorded when set.
ARITHMETIC_ENV = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's ``/proc/cpuinfo``; elsewhere ``platform.processor()``), or ``unknown``."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe() -> dict[str, Any]:
    """``{"cpu", "machine", "cores", "torch", "cpu_capability", "python"}`` and each of :data:`ARITHMETIC_ENV` that
    is set, for this process."""
    import torch

    return {
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        **{name: os.environ[name] for name in ARITHMETIC_ENV if os.environ.get(name)},
    }


def label(host: Mapping[str, Any]) -> str:
    """One line for a report: ``Intel(R) Xeon(R) Processor, 2 cores, torch 2.14.1 (AVX512)``, with the arithmetic
    environment variables where the run had them set."""
    env = ", ".join(f"{name}={host[name]}" for name in ARITHMETIC_ENV if host.get(name))
    return (
        f"{host.get('cpu', 'unknown')}, {host.get('cores', '?')} cores, torch {host.get('torch', '?')} "
        f"({host.get('cpu_capability', '?')}{', ' + env if env else ''})"
    )
