"""Library warnings reach the console once under Hydra (their own console handler is dropped, root's prints them)."""

from __future__ import annotations

import logging
import sys

import pytest

from perfedavg.data.log_routing import route_library_logs


@pytest.fixture
def library_logger():
    logger = logging.getLogger("perfedavg_test_library")
    own = logging.StreamHandler(sys.stderr)
    logger.addHandler(own)
    yield logger, own
    logger.handlers.clear()


def test_a_library_console_handler_is_dropped_when_root_prints(library_logger, monkeypatch) -> None:
    logger, own = library_logger
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [logging.StreamHandler(sys.stderr)])
    route_library_logs(("perfedavg_test_library",))
    assert own not in logger.handlers
    assert logger.propagate  # its records still reach root's handler (Hydra's console and file)


def test_nothing_changes_without_root_handlers(library_logger, monkeypatch) -> None:
    logger, own = library_logger
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    route_library_logs(("perfedavg_test_library",))
    assert logger.handlers == [own]


def test_file_handlers_and_non_propagating_loggers_are_kept(library_logger, monkeypatch, tmp_path) -> None:
    logger, own = library_logger
    file_handler = logging.FileHandler(tmp_path / "lib.log")
    logger.addHandler(file_handler)
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.StreamHandler(sys.stderr)])
    route_library_logs(("perfedavg_test_library",))
    assert logger.handlers == [file_handler]
    file_handler.close()
    logger.addHandler(own)
    monkeypatch.setattr(logger, "propagate", False)
    route_library_logs(("perfedavg_test_library",))
    assert own in logger.handlers
