"""The ``perfedavg`` command: a thin ``@hydra.main`` around :func:`perfedavg.run.runner.run`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from perfedavg.config import (
    GROUPS,
    SWEPT_KEYS_VARIABLE,
    ConfigError,
    check_overrides,
    needs_hydra_runtime,
    register_schema,
    to_container,
    validate,
)
from perfedavg.config.preparation import (
    CONF_DIR,
    check_composes,
    check_conf_dir,
    check_output_dir,
    check_resumable,
    load_checkpoint,
)
from perfedavg.errors import exit_on_user_error
from perfedavg.federation import stopping
from perfedavg.federation.stopping import FederationInterrupted
from perfedavg.run import lock as run_lock
from perfedavg.run import sweep_records

# The federation (PyTorch, Flower) is imported by the job, after the command line has been checked: a mistake in it
# is named within about a second (tests/test_cli.py), not after seconds of imports.

log = logging.getLogger("perfedavg")


class _JobTag(logging.Filter):
    """Prefix this job's log lines with its run directory's name (multirun jobs run side by side)."""

    def __init__(self, tag: str) -> None:
        super().__init__()
        self.tag = tag

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "job_tagged", False):
            record.msg = f"[{self.tag}] {record.msg}"
            record.job_tagged = True
        return True


def _job(cfg: DictConfig) -> float | None:
    from perfedavg.federation import FederationError
    from perfedavg.federation.console import done_line
    from perfedavg.run.runner import run

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        for existing in [f for f in log.filters if isinstance(f, _JobTag)]:
            log.removeFilter(existing)
        log.addFilter(_JobTag(run_dir.name))
    # the job's directory is one level below the sweep's (conf/config.yaml hydra.sweep.subdir)
    sweep_dir = run_dir.parent if hydra_cfg.mode == RunMode.MULTIRUN else None
    try:
        with exit_on_user_error(), sweep_records.restored_on_refusal(sweep_dir, run_dir):
            if cfg.resume == AUTO_RESUME:
                finished = _auto_resume(cfg, run_dir)
                if finished is not None:
                    return finished
            elif not cfg.resume:
                check_not_a_run(run_dir, hydra_cfg.mode == RunMode.MULTIRUN)
            summary = run(cfg, run_dir)
    except FederationError as e:
        log.error("federation stopped: %s (logs so far are in %s)", e, run_dir)
        if hydra_cfg.mode == RunMode.MULTIRUN:  # the launcher records this job as failed (Optuna's sweeper goes on)
            raise SweepJobFailed(f"{run_dir.name}: federation stopped: {e}") from None
        sys.exit(1)
    except FederationInterrupted as e:
        print(interrupted_line(e, run_dir, hydra_cfg.mode == RunMode.MULTIRUN), file=sys.stderr)
        if cfg.backend == "ray":
            stopping.end_leftovers()  # Ray's workers, still busy with a client, may outlive the driver
        logging.shutdown()
        sys.exit(e.exit_code)  # 130 (SIGINT) or 143 (SIGTERM); a sweep stops with it
    final = summary["final"]
    log.info(done_line(summary))
    log.info("curves: tensorboard --logdir %s", run_dir)
    return _objective(final)


class SweepJobFailed(CompactHydraException):
    """A sweep job whose federation stopped (e.g. diverged): Hydra reports it as one line, not a traceback, and the
    sweep goes on or ends with exit 1 as for any failed job."""


def interrupted_line(e: FederationInterrupted, run_dir: Path, multirun: bool) -> str:
    """What to do after a stop signal: the command that continues the run (or the sweep)."""
    if multirun:
        return (
            f"perfedavg: interrupted after round {e.completed} of {run_dir}; continue the sweep with the same command "
            f"and resume={AUTO_RESUME} (finished runs are kept, this one continues)"
        )
    if e.completed == 0:
        return f"perfedavg: interrupted before round 1 completed; nothing to continue in {run_dir}"
    return f"perfedavg: interrupted after round {e.completed}; continue with: perfedavg resume={run_dir.resolve()}"


#: ``resume=auto``: continue this run directory's checkpoint if it has one, skip it if it is finished (sweeps).
AUTO_RESUME = "auto"


def _objective(final: dict[str, float]) -> float | None:
    """What a Hydra sweeper optimizes: the final personalized accuracy (classification; maximize) or loss
    (regression; minimize), on the run's ``eval_split``."""
    return final.get("eval/personalized_acc", final.get("eval/personalized_loss"))


def _auto_resume(cfg: DictConfig, run_dir: Path) -> float | None:
    """``resume=auto`` in ``run_dir``: no checkpoint → a fresh run; a checkpoint short of ``num_rounds`` → resume it
    (the config must match, as for ``resume=<dir>``); finished (``metrics.json`` written at the last round) and of the
    same config → return its objective without running anything. Sets ``cfg.resume`` accordingly."""
    state = load_checkpoint(run_dir, f"resume=auto in {run_dir}")
    cfg.resume = None if state is None else str(run_dir)
    if state is not None:
        check_resumable(to_container(cfg))  # a different config never continues (nor stands in for) a run
    final = read_final_metrics(run_dir / "metrics.json") if state is not None else None
    if state is not None and state["round"] >= cfg.num_rounds and final is not None:
        log.info("already complete (%d rounds), kept as it is: %s", state["round"], run_dir)
        return _objective(final)
    if state is not None:
        log.info("continuing from the checkpoint of round %d in %s", state["round"], run_dir)
    return None


def read_final_metrics(path: Path) -> dict[str, float] | None:
    """The ``final`` metrics of a finished run's ``metrics.json``; ``None`` where there is none, or, with one line
    naming it, where it cannot be read (a damaged file: the run is then finished again from its checkpoint, which
    writes it anew)."""
    if not path.exists():
        return None
    try:
        final = json.loads(path.read_text())["final"]
        if not isinstance(final, dict):
            raise TypeError("'final' is not a table")
        return final
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s cannot be read (%s: %s); rewriting it from the run's checkpoint", path, type(e).__name__, e)
        return None


def check_not_a_run(run_dir: Path, multirun: bool = False) -> None:
    """A fresh run never replaces another: a directory holding a checkpoint or a finished run's ``metrics.json`` is
    refused (:class:`ConfigError` naming how to continue it, or how to start afresh)."""
    from perfedavg import checkpoint

    run_dir = Path(run_dir)
    state_file = checkpoint.checkpoint_path(run_dir)
    finished = (run_dir / "metrics.json").exists()
    if not (finished or state_file.exists() or state_file.with_name(checkpoint.PREVIOUS_FILE).exists()):
        return
    what = "a finished run" if finished else "an interrupted run's checkpoint"
    again = (
        f"add resume={AUTO_RESUME} to the sweep command to continue it (finished runs are kept)"
        if multirun
        else f"continue it with resume={run_dir.resolve()}"
    )
    raise ConfigError(
        f"run directory {run_dir} holds {what}; {again}, or start afresh in another directory "
        f"({'hydra.sweep.dir' if multirun else 'hydra.run.dir'}=…) or after removing it"
    )


def resume_arguments(argv: list[str]) -> list[str]:
    """With ``resume=<run dir>``: the run's original overrides (the user's own replace those with the same key),
    its ``num_rounds`` as last checkpointed (an extended run stays extended), the user's arguments, and Hydra told
    to write into that directory without rewriting its ``.hydra/`` record (a refused resume changes nothing)."""
    given = [a for a in argv if a.startswith("resume=")]
    if not given or given[-1] == f"resume={AUTO_RESUME}":
        return argv
    if any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError("resume= continues one run; it cannot be combined with a multirun (-m)")
    run_dir = Path(given[-1].split("=", 1)[1]).expanduser()
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.exists():
        raise ConfigError(f"resume={run_dir}: not a perfedavg run directory (no {saved})")
    import yaml

    keys = {a.split("=", 1)[0] for a in argv if "=" in a}
    recorded = [str(o) for o in yaml.safe_load(saved.read_text()) or []]
    groups = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in recorded if "=" in o}
    for a in argv:  # another experiment or group choice is another run, not this one continued
        key, _, value = a.partition("=")
        if key in GROUPS and value != groups.get(key, value if key != "experiment" else "null"):
            raise ConfigError(
                f"resume={run_dir}: {key}={value}, but the run was started with {key}={groups.get(key, 'null')}; a "
                f"resume continues the run with its own {key} (leave {key}= out), a run with another is a new run"
            )
    original = [o for o in recorded if o.split("=", 1)[0] not in keys | {"resume"}]
    state = load_checkpoint(run_dir, f"resume={run_dir}")
    if state is not None and "num_rounds" not in keys:
        original = [o for o in original if not o.startswith("num_rounds=")]
        original.append(f"num_rounds={state['config']['num_rounds']}")
    argv = [f"resume={hydra_value(str(run_dir))}" if a.startswith("resume=") else a for a in argv]
    return [*original, *argv, f"hydra.run.dir={hydra_value(str(run_dir.resolve()))}", "hydra.output_subdir=null"]


#: Characters an override's value may hold unquoted (Hydra's grammar gives `=`, `,`, spaces, brackets… a meaning).
_PLAIN_VALUE = re.compile(r"[\w/.\-~+@%:]+")


def hydra_value(value: str) -> str:
    """``value`` as an override's value: as it is where Hydra reads it so, else single-quoted (a sweep job's
    directory ``1_hessian=fo,seed=1`` holds ``=`` and ``,``)."""
    if _PLAIN_VALUE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def swept_in(argv: list[str]) -> list[str]:
    """The keys ``argv`` sweeps (``hessian=fo,hvp``, ``seed=range(3)``), in its order; Hydra's own keys left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [a for a in argv if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    parsed = OverridesParser.create().parse_overrides(given)
    return [o.get_key_element() for o in parsed if o.is_sweep_override()]


def output_target(argv: list[str]) -> Path:
    """Where Hydra will create this invocation's run (or sweep) directory."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    key = "hydra.sweep.dir=" if multirun else "hydra.run.dir="
    explicit = [a.split("=", 1)[1] for a in argv if a.startswith(key)]
    return Path(explicit[-1]) if explicit else Path.cwd() / ("multirun" if multirun else "outputs")


def main() -> None:
    """The ``perfedavg`` command. Ctrl-C before a run's federation starts (composing, loading data; the federation
    itself handles it, see :mod:`perfedavg.federation.stopping`) ends it with one line and exit 130, not a traceback."""
    try:
        _main()
    except KeyboardInterrupt:
        print("perfedavg: interrupted before the federation started; nothing to continue", file=sys.stderr)
        sys.exit(130)


def _main() -> None:
    held = contextlib.ExitStack()  # the chosen run directory's lock, from before Hydra writes until the run ends
    with exit_on_user_error():
        check_conf_dir()
        sys.argv[1:] = resume_arguments(sys.argv[1:])
        check_overrides(sys.argv[1:], str(CONF_DIR))
        composed = check_composes(sys.argv[1:])
        target = output_target(sys.argv[1:])
        check_output_dir(target)
        single = not any(a in ("-m", "--multirun") for a in sys.argv[1:])
        if single and not needs_hydra_runtime(composed):  # ranges before Hydra starts (sweeps: check_composes)
            validate(composed)
        if not single:  # the jobs (in this process or a launcher's workers) name their runs after what varies
            os.environ[SWEPT_KEYS_VARIABLE] = ",".join(swept_in(sys.argv[1:]))
            # The Optuna sweeper imports alembic, whose plugin set-up logs at INFO through Hydra's root handler
            # (the runs themselves: perfedavg.run.runner).
            logging.getLogger("alembic").setLevel(logging.INFO if composed.verbose else logging.WARNING)
        chosen_dir = single and any(a.startswith("hydra.run.dir=") for a in sys.argv[1:])
        if chosen_dir and not any(a.startswith("resume=") for a in sys.argv[1:]):
            check_not_a_run(target)
        # A chosen run directory is held from here, before Hydra writes anything into it (.hydra/, the log): a run
        # refused because another holds it changes nothing there. (Hydra's own dated directories are new.)
        if chosen_dir:
            held.enter_context(run_lock.hold(target))
    with held:
        hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")(_job)()


# Hydra's launchers may run jobs in worker processes that import this module to call ``_job``: the schema and the
# resolvers the sweep directory names use (``run_name``) must be registered there too (an installed algorithm plugin
# that cannot be loaded is named in one line).
with exit_on_user_error():
    register_schema()

if __name__ == "__main__":
    main()
