"""The ``perfedavg`` command: a thin ``@hydra.main`` around :func:`perfedavg.runner.run`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from perfedavg.config import ConfigError, check_overrides, register_schema
from perfedavg.curvature import HessianTooLargeError
from perfedavg.data import DataError
from perfedavg.runner import CONF_DIR, run
from perfedavg.server_app import FederationError

log = logging.getLogger("perfedavg")


def _job(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = run(cfg, run_dir)
    except (ConfigError, DataError, HessianTooLargeError) as e:
        print(f"perfedavg: error: {e}", file=sys.stderr)
        sys.exit(2)
    except FederationError as e:
        log.error("federation stopped: %s (logs so far are in %s)", e, run_dir)
        sys.exit(1)
    final = summary["final"]
    shown = ", ".join(f"{k} {v:.4f}" for k, v in final.items())
    log.info("done in %.1f s: %s", summary["wall_s"], shown)
    log.info("curves: tensorboard --logdir %s", run_dir)
    return final.get("eval/personalized_acc", final.get("eval/personalized_loss"))


def main() -> None:
    try:
        check_overrides(sys.argv[1:], str(CONF_DIR))
    except ConfigError as e:
        print(f"perfedavg: error: {e}", file=sys.stderr)
        sys.exit(2)
    register_schema()
    hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")(_job)()


if __name__ == "__main__":
    main()
