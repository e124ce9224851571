"""Flower ServerApps: thin entry points over the round loop of :mod:`perfedavg.federation.loop`.

:func:`build_server_app` serves the simulation launched by the CLI (one resolved config); the module-level ``app``
serves ``flwr run .`` by composing the same Hydra config from the run config (:mod:`perfedavg.config.preparation`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from perfedavg.config.preparation import prepare_overrides
from perfedavg.engines import sim_engine
from perfedavg.errors import UserError
from perfedavg.federation.console import done_line
from perfedavg.federation.record import run_and_record

log = logging.getLogger("perfedavg")


def build_server_app(cfg: dict[str, Any], run_dir: Path, outcome: dict[str, Any]) -> ServerApp:
    """A ServerApp bound to one resolved config (the CLI's simulation path). It ends normally whatever happens, and
    leaves in ``outcome`` the run's ``summary`` or the ``error`` that stopped it, for the caller to raise after
    ``run_simulation`` returns: Flower re-raises a ServerApp's exception too, but only after waiting 3 s for a
    result the ServerApp will never send (a stop signal should take effect at once)."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            outcome["summary"] = run_and_record(grid, cfg, run_dir, transport=sim_engine.TRANSPORT)
        except Exception as e:  # noqa: BLE001 - raised again by the caller (perfedavg.run.runner)
            outcome["error"] = e
        finally:
            sim_engine.close()  # no thread may wait on Ray once Flower's engine shuts it down after this returns

    return server


# ``flwr run .``: the run config names Hydra overrides; the same conf/ tree is composed here.
app = ServerApp()


class _ToFlowerLog(logging.Handler):
    """Under ``flwr run`` only Flower's logger reaches the user's console (``--stream``): forward ours to it."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger("flwr").log(record.levelno, self.format(record))


@app.main()
def flwr_main(grid: Grid, context: Context) -> None:
    if not any(isinstance(h, _ToFlowerLog) for h in log.handlers):
        log.addHandler(_ToFlowerLog())
        log.setLevel(logging.INFO)

    try:
        cfg = prepare_overrides(str(context.run_config.get("overrides", "")).split())
    except UserError as e:  # Flower adds a traceback, marks the run failed
        log.error("perfedavg: error: %s", e)
        raise
    run_dir = Path(str(context.run_config.get("output-dir", "outputs/flwr"))) / time.strftime("%Y-%m-%d_%H-%M-%S")
    summary = run_and_record(grid, cfg, run_dir, transport=sim_engine.TRANSPORT)
    log.info(done_line(summary))
    log.info("curves: tensorboard --logdir %s", run_dir.resolve())
