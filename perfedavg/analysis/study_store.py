"""Where a tuning study lives on disk, so that one cut off (a session's end, Ctrl-C) continues instead of starting
over: a study of hours (the FedAvg CNN's Hessian-vector products, the Shakespeare LSTM) outlasts a working session.

A method's study directory ``TUNE_DIR/METHOD`` holds the trials' runs:

- ``trial<N>``: the runs of its first launch (Hydra job N);
- ``from<K>/trial<N>``: the runs of a launch that resumed the study once K trial directories existed: trial K + N.

A trial is *told* (it counts against ``--trials``) when its run finished (``metrics.json``) or failed on its own (its
job log says ``federation stopped``, e.g. a diverged run). A run without either was cut off: where the study was
resumed after it, it is not a trial at all (:func:`cut_off`), and the resumed launch runs the trials still missing.

The resumed launch's sampler sees the trials told so far: :class:`ResumedTPESampler` (the sweeper's TPE sampler,
named as ``hydra.sweeper.sampler._target_``) adds them to the new, in-memory study before its first suggestion, from
the runs on disk. (Optuna's own storage is not used: the Optuna that hydra-optuna-sweeper requires, < 3, fails to
open an SQLite storage with SQLAlchemy 2.) The start-up draws of a resumed launch come from another stream
(seed + K), so it does not repeat the first launch's points.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path
from typing import Any

#: The environment variable through which ``perfedavg-tune`` tells :class:`ResumedTPESampler` what to resume.
RESUME_ENV = "PERFEDAVG_TUNE_RESUME"
_TRIAL, _PART = "trial", "from"
_FAILED = "federation stopped:"


def trial_dirs(study: Path) -> list[tuple[int, Path]]:
    """``(trial number, run directory)`` of every search trial of ``study``, over its launches, in number order."""
    found = []
    parts = [(study, 0)] + [
        (p, int(p.name.removeprefix(_PART)))
        for p in study.glob(f"{_PART}*")
        if p.is_dir() and p.name.removeprefix(_PART).isdigit()
    ]
    for base, offset in parts:
        for run_dir in base.glob(f"{_TRIAL}*"):
            if run_dir.is_dir() and run_dir.name.removeprefix(_TRIAL).isdigit():
                found.append((offset + int(run_dir.name.removeprefix(_TRIAL)), run_dir))
    return sorted(found)


def outcome(run_dir: Path) -> dict[str, Any] | None:
    """A told trial's run: its ``metrics.json`` summary, ``{}`` where it failed (a logged ``federation stopped``);
    None where it has neither (cut off, or still running)."""
    if (run_dir / "metrics.json").is_file():
        return json.loads((run_dir / "metrics.json").read_text())
    logs = sorted(run_dir.glob("*.log"))
    if any(_FAILED in log.read_text(errors="replace") for log in logs):
        return {}
    return None


def run_overrides(run_dir: Path) -> dict[str, str]:
    """The ``key=value`` overrides a run was given (its ``.hydra/overrides.yaml``)."""
    import yaml

    items = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    return dict(item.split("=", 1) for item in items if "=" in item)


def told(study: Path) -> int:
    """How many trials of ``study`` have an outcome: its budget spent."""
    return sum(outcome(run_dir) is not None for _, run_dir in trial_dirs(study))


def cut_off(study: Path) -> set[int]:
    """Trials without an outcome that a later launch of the study followed: cut off, not trials of the study."""
    dirs = trial_dirs(study)
    if not dirs:
        return set()
    latest = dirs[-1][1].parent  # the directory of the study's latest launch (offsets grow)
    return {n for n, p in dirs if p.parent != latest and outcome(p) is None}


def next_launch_dir(study: Path) -> Path:
    """The sweep directory of the study's next launch: the study itself for its first, ``from<K>`` once K trial
    directories exist."""
    count = len(trial_dirs(study))
    return study if count == 0 else study / f"{_PART}{count}"


def resume_environment(study: Path, space: list[str]) -> dict[str, str]:
    """What :class:`ResumedTPESampler` needs, as an environment for the launch: the study and its search space as the
    sweeper receives it (``alpha=tag(log, interval(0.0003, 0.3))``, …)."""
    return {RESUME_ENV: json.dumps({"study": str(study.resolve()), "space": space})}


def told_trials(study: Path, space: list[str]) -> list[Any]:
    """The told trials of ``study`` as Optuna trials (``optuna.trial.FrozenTrial``) over ``space``: finished ones
    with their objective, failed ones as failed; a trial outside ``space`` (tuned before with another ``--range``)
    is left out."""
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
    from optuna.distributions import IntLogUniformDistribution, IntUniformDistribution

    distributions = {
        o.get_key_element(): create_optuna_distribution_from_override(o)
        for o in OverridesParser.create().parse_overrides(space)
    }
    trials = []
    for _, run_dir in trial_dirs(study):
        summary = outcome(run_dir)
        if summary is None:
            continue
        given = run_overrides(run_dir)
        if not set(distributions) <= set(given):
            continue
        params = {
            key: int(float(given[key]))
            if isinstance(dist, (IntUniformDistribution, IntLogUniformDistribution))
            else float(given[key])
            for key, dist in distributions.items()
        }
        if not all(dist._contains(dist.to_internal_repr(params[key])) for key, dist in distributions.items()):
            continue
        final = summary.get("final", {})
        value = final.get("eval/personalized_acc", final.get("eval/personalized_loss"))
        state = optuna.trial.TrialState.COMPLETE if value is not None else optuna.trial.TrialState.FAIL
        with warnings.catch_warnings():  # "create_trial is experimental" (since Optuna 2.0, stable in 3)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            trials.append(
                optuna.trial.create_trial(state=state, value=value, params=params, distributions=distributions)
            )
    return trials


def _resume_spec() -> dict[str, Any] | None:
    spec = os.environ.get(RESUME_ENV)
    return json.loads(spec) if spec else None


@functools.cache
def _resumed_tpe_sampler() -> type:
    """:class:`ResumedTPESampler`, built on first use: Optuna takes seconds to import, and only a sweep needs it."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.samplers import TPESampler

    class ResumedTPESampler(TPESampler):  # type: ignore[misc]
        """Optuna's TPE sampler that, before its first suggestion, adds the told trials of the study named in
        :data:`RESUME_ENV` to the (new) study it samples for, so a resumed launch continues the search where the
        cut-off one stopped; its seed is offset by the trials already told. Without the variable it is the TPE
        sampler."""

        def __init__(self, **kwargs: Any) -> None:
            self._resume = _resume_spec()
            if self._resume is not None and kwargs.get("seed") is not None:
                kwargs["seed"] = int(kwargs["seed"]) + told(Path(self._resume["study"]))
            super().__init__(**kwargs)

        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            if self._resume is not None:
                resume, self._resume = self._resume, None
                with warnings.catch_warnings():  # "add_trial is experimental" (since Optuna 2.0, stable in 3)
                    warnings.simplefilter("ignore", ExperimentalWarning)
                    for past in told_trials(Path(resume["study"]), resume["space"]):
                        study.add_trial(past)
            return super().infer_relative_search_space(study, trial)

    ResumedTPESampler.__module__, ResumedTPESampler.__qualname__ = __name__, "ResumedTPESampler"
    return ResumedTPESampler


def __getattr__(name: str) -> Any:
    """``ResumedTPESampler`` (the name conf/hydra/sweeper/step_sizes.yaml gives Hydra), built on first access."""
    if name == "ResumedTPESampler":
        return _resumed_tpe_sampler()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
