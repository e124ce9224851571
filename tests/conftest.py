"""Test-wide settings: no test may reach the Hugging Face hub, and none writes into the user's cache."""

from __future__ import annotations

import os
import tempfile

# Read by huggingface_hub / datasets at import time, so set before any test module imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="perfedavg-hf-"))
# Decoded image arrays and partitions (perfedavg.data.array_cache) go to a temporary cache, not the user's.
os.environ.setdefault("PERFEDAVG_CACHE_DIR", tempfile.mkdtemp(prefix="perfedavg-cache-"))
# A pytest-xdist worker (scripts/test.sh) shares the CPUs with the other workers: BLAS threads of its own would
# oversubscribe them (measured: an in-process eigensolver test 2.5 s alone, 18 s beside another worker). numpy and
# scipy read this at import; PyTorch's own pool is set in pytest_configure. Runs in subprocesses set their own.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


import pytest  # noqa: E402 - after the environment above is set
from support import forget_process_caches  # noqa: E402


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A decoded-data cache of the test's own, and a process that has loaded nothing yet (before and after)."""
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(tmp_path / "decoded"))
    forget_process_caches()
    yield tmp_path / "decoded"
    forget_process_caches()


@pytest.fixture
def silent_and_closed_ports():
    """Two loopback ports that answer nothing: one with a listener that never accepts (a TCP backlog nobody reads:
    a client's connect succeeds and then waits) and one with nothing listening (refused at once)."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        yield silent.getsockname()[1], closed_port
    finally:
        silent.close()


def pytest_configure(config: pytest.Config) -> None:
    """One PyTorch thread per xdist worker (see the top of this file); a plain ``pytest`` keeps PyTorch's default."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tests first (in their collected order, then the rest in theirs): run in parallel
    (``pytest -n``, as scripts/test.sh does), the long ones start while the short ones fill the gaps, instead of
    one long test finishing alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
