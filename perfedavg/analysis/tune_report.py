"""Read the step-size studies of ``perfedavg-tune``, choose each method's (α, β), and write them down.

    python -m perfedavg.analysis.tune_report TUNE_DIR --experiment paper_mnist [--methods fedavg fo fd hvp]

(``perfedavg-tune`` calls this itself when its studies are done; run it by hand to rewrite the files from a tuning
directory.) TUNE_DIR holds one Optuna study per method (``TUNE_DIR/<method>/trial<N>/``, each a run with
``metrics.json`` and ``.hydra/overrides.yaml``) and, after the tuner's second stage, the confirmation runs of its
best trials over the experiment's own number of rounds (``TUNE_DIR/<method>/confirm-trial<N>/``). Per method the
chosen values are those of the best finished confirmation run, or without any, of the best trial (final personalized
accuracy on the validation split; lowest loss for regression). Writes:

- the tuned experiment (``--config-out``, default ``<config dir>/experiment/<experiment>_tuned.yaml``, where
  ``perfedavg experiment=<experiment>_tuned`` finds it): the experiment with a ``step_sizes`` table (one entry per
  tuned method, and hvp's values for ``exact``, the same product) read by ``alpha: ${per_method:alpha}``;
- the tuning report (``--out``, default ``TUNE_DIR/tune_<experiment>.md``): the protocol, the budget, the chosen
  values, each method's best trials and its confirmation runs (with the command and commit that produced them);

and prints the Markdown. Failed trials (e.g. runs that diverged to a non-finite model) are counted and listed.

``--overrides KEY=VALUE ...`` (what the tuner was given after the experiment) become part of the tuned experiment
where they say *what* is computed (``partition.alpha=0.1``, ``partition=iid``): the step sizes were tuned for that
setting, so running the tuned experiment without it would use them elsewhere. Where and how a run computes
(:data:`NOT_SETTINGS`: ``dataset.path``, ``backend``, …) is left out. ``--merge`` keeps the entries of methods this
tuning did not cover from an existing tuned experiment (same experiment and setting), so methods tuned at different
times share one file; each tuning's command stays in its header.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from perfedavg import algorithms
from perfedavg.analysis import study_store
from perfedavg.analysis.results_file import recording
from perfedavg.config import EXECUTION_KEYS
from perfedavg.federation.divergence import at_chance, collapsed_round

#: Methods that take another method's tuned values: the same algorithm with another estimate of the Hessian term.
SHARED = {"exact": "hvp"}


def _searched() -> dict[str, tuple[str, str, bool]]:
    """Every key some method's search space holds (the algorithms' declarations), in table order (α, β, the
    algorithms' own keys, the shared ones): override → (its step_sizes entry, its column title, integer)."""
    found: dict[str, tuple[str, str, bool]] = {
        "alpha": ("alpha", "α", False),
        "beta": ("beta", "β", False),
    }
    shared: dict[str, tuple[str, str, bool]] = {}
    for declared in algorithms.declarations().values():
        for key, search in declared.search_space().items():
            own = declared.key(key.removeprefix("algorithm.")) if key.startswith("algorithm.") else None
            entry = key.removeprefix("algorithm.")
            target = found if own is not None else shared
            target.setdefault(key, (entry, (own.symbol or entry) if own else entry, search.integer))
    return found | {k: v for k, v in shared.items() if k not in found}


#: Keys the studies search: override → (its step_sizes entry, its column title, integer); α and β, λ and K for
#: pFedMe, λ for Ditto, adapt_steps for fedavg_ft (from each algorithm's declared search space).
SEARCHED = _searched()
#: Overrides that say where or how a run computes, not what: never part of a tuned experiment's setting.
NOT_SETTINGS = EXECUTION_KEYS
#: Config groups a setting may choose (``partition=iid``): written as the tuned experiment's defaults overrides.
SETTING_GROUPS = ("model", "partition", "dataset")
#: Keys the tuner sets per method or per stage: a setting cannot fix them.
TUNED_KEYS = ("algorithm", "hessian", *SEARCHED, "seed", "eval_split")


def settings(overrides: list[str]) -> dict[str, str]:
    """The ``key=value`` overrides that define the tuned experiment, in order (see the module's docstring).

    Raises ValueError for an override that cannot be part of an experiment file (``+key``, ``~key``, no ``=``) or
    that the tuner itself sets per method (``alpha``, ``algorithm``, …)."""
    chosen: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if key.startswith("hydra.") or key.startswith("hydra/") or key in NOT_SETTINGS:
            continue
        if not sep or key[:1] in "+~":
            raise ValueError(f"override {item!r}: a tuned experiment's setting must be key=value (no + or ~)")
        if key in TUNED_KEYS:
            raise ValueError(f"override {item!r}: {key} is chosen per method by the tuning, not a setting")
        chosen[key] = value
    return chosen


def setting_text(setting: dict[str, str]) -> str:
    """``partition.alpha=0.1, …`` or ``the experiment as it is``."""
    return ", ".join(f"{k}={v}" for k, v in setting.items()) or "the experiment as it is"


@dataclass
class Trial:
    number: int
    objective: float | None  # None: the run failed (no final metrics)
    maximize: bool  # the objective is an accuracy (classification), not a loss (regression)
    wall_s: float | None
    overrides: dict[str, str]
    searched: dict[str, float] = field(default_factory=dict)  # the :data:`SEARCHED` keys this study varied
    seed: int = 0  # the run's seed (confirmation runs: one per seed)
    unstable: str | None = None  # why a finished confirmation run is rejected (collapsed, chance level), or None

    def values(self) -> str:
        """``α = …, β = …`` (and ``λ = …`` etc.), 3 significant digits."""
        return ", ".join(f"{SEARCHED[k][1]} = {v:.3g}" for k, v in self.searched.items())

    def cells(self) -> str:
        """The table cells ``α | β`` (one per searched key)."""
        return " | ".join(f"{v:.3g}" for v in self.searched.values())


def read_trials(study: Path) -> list[Trial]:
    """Every search trial of ``study`` (in trial order, over the launches of a resumed study), finished or failed;
    a run cut off with its launch is not one (:mod:`perfedavg.analysis.study_store`; the confirmation runs:
    :func:`read_confirmations`)."""
    trials = []
    cut_off = study_store.cut_off(study)
    for number, run_dir in study_store.trial_dirs(study):
        if number in cut_off or not (run_dir / ".hydra" / "overrides.yaml").exists():
            continue
        given = study_store.run_overrides(run_dir)
        metrics = run_dir / "metrics.json"
        objective = wall = None
        maximize = True
        if metrics.exists():
            summary = json.loads(metrics.read_text())
            final = summary["final"]
            maximize = "eval/personalized_acc" in final
            objective = final["eval/personalized_acc" if maximize else "eval/personalized_loss"]
            wall = summary.get("wall_s")
        searched = {key: float(given[key]) for key in SEARCHED if key in given}
        trials.append(Trial(number, objective, maximize, wall, given, searched))
    return trials


_CONFIRMATION = re.compile(r"confirm-trial(\d+)(?:-seed(\d+))?")


def instability(run_dir: Path, summary: dict) -> str | None:
    """Why a finished run cannot stand for a stable setting: ``collapsed at round R`` (its training loss left 100×
    its first round's, or was not finite, though the run went on: :mod:`perfedavg.federation.divergence`) or
    ``ended at chance level (0.10)``; None where neither."""
    import yaml

    collapsed = collapsed_round(summary.get("rounds") or [])
    if collapsed is not None:
        return f"collapsed at round {collapsed}"
    final = summary.get("final", {})
    config = run_dir / ".hydra" / "config.yaml"
    classes = (
        (yaml.safe_load(config.read_text()) or {}).get("dataset", {}).get("num_classes") if config.exists() else None
    )
    acc = final.get("eval/personalized_acc")
    if acc is not None and classes and at_chance(acc, int(classes)):
        return f"ended at chance level ({acc:.2f})"
    return None


def read_confirmations(study: Path) -> dict[int, list[Trial]]:
    """The confirmation runs under ``study`` by trial number (``confirm-trial<N>-seed<S>``; an older tuning's
    ``confirm-trial<N>`` counts as its seed), each with its seed and, where it finished, :func:`instability`."""
    found: dict[int, list[Trial]] = {}
    for run_dir in sorted(p for p in study.glob("confirm-trial*") if p.is_dir()):
        match = _CONFIRMATION.fullmatch(run_dir.name)
        if not match or not (run_dir / ".hydra" / "overrides.yaml").exists():
            continue
        given = study_store.run_overrides(run_dir)
        objective = wall = unstable = None
        maximize = True
        if (run_dir / "metrics.json").exists():
            summary = json.loads((run_dir / "metrics.json").read_text())
            maximize = "eval/personalized_acc" in summary["final"]
            objective = summary["final"]["eval/personalized_acc" if maximize else "eval/personalized_loss"]
            wall = summary.get("wall_s")
            unstable = instability(run_dir, summary)
        seed = int(match.group(2)) if match.group(2) is not None else int(given.get("seed", 0))
        searched = {key: float(given[key]) for key in SEARCHED if key in given}
        number = int(match.group(1))
        found.setdefault(number, []).append(Trial(number, objective, maximize, wall, given, searched, seed, unstable))
    return {n: sorted(runs, key=lambda t: t.seed) for n, runs in sorted(found.items())}


def stable_mean(runs: list[Trial]) -> Trial | None:
    """A candidate confirmed on every seed it ran: the first run with the objective averaged over seeds; None where
    any run did not finish (diverged or cut off), collapsed, or ended at chance level."""
    if not runs or any(t.objective is None or t.unstable for t in runs):
        return None
    mean = sum(t.objective for t in runs) / len(runs)  # type: ignore[misc]
    first = runs[0]
    return Trial(first.number, mean, first.maximize, sum(t.wall_s or 0 for t in runs), first.overrides, first.searched)


def rejection(runs: list[Trial]) -> str:
    """``seed 1: did not finish; seed 2: collapsed at round 40`` for a candidate :func:`stable_mean` rejects."""
    reasons = []
    for t in runs:
        if t.objective is None:
            reasons.append(f"seed {t.seed}: did not finish (diverged or cut off)")
        elif t.unstable:
            reasons.append(f"seed {t.seed}: {t.unstable}")
    return "; ".join(reasons)


def chosen_table(choices: dict[str, Trial]) -> dict[str, dict[str, float]]:
    """Each method's step_sizes entry: its searched values, 3 significant digits (integers as they are)."""
    table: dict[str, dict[str, float]] = {}
    for method, trial in choices.items():
        table[method] = {
            SEARCHED[k][0]: int(v) if SEARCHED[k][2] else float(f"{v:.3g}") for k, v in trial.searched.items()
        }
    for method, source in SHARED.items():
        if source in table and method not in table:
            table[method] = dict(table[source])
    return table


def _setting_lines(setting: dict[str, str]) -> tuple[list[str], list[str]]:
    """(defaults overrides, key lines) for a setting: a group choice overrides the group, a dotted key is nested."""
    import yaml

    groups = [f"  - override /{k}: {v}" for k, v in setting.items() if k in SETTING_GROUPS]
    nested: dict = {}
    for key, value in setting.items():
        if key in SETTING_GROUPS:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value) if value != "" else ""
    body = yaml.safe_dump(nested, sort_keys=False, default_flow_style=False).splitlines() if nested else []
    return groups, body


def tuned_yaml(
    experiment: str,
    table: dict[str, dict[str, float]],
    command: str | list[str],
    setting: dict[str, str] | None = None,
    report_name: str | None = None,
) -> str:
    """The tuned experiment: ``experiment`` with ``setting`` and the per-method ``step_sizes`` table. ``command``:
    the tuning command, or a list of them (one per merged tuning, each already naming its methods)."""
    commands = [command] if isinstance(command, str) else command
    groups, body = _setting_lines(setting or {})
    report_name = report_name or f"tune_{experiment}.md"
    lines = [
        "# @package _global_",
        f"# GENERATED by perfedavg-tune {experiment} (perfedavg.analysis.tune_report); edit by re-running it.",
        f"# The {experiment} experiment with step sizes tuned per method on validation data (protocol, budget and",
        f"# best trials: {report_name}). A method without its own entry here is refused.",
        *([f"# Setting the step sizes were tuned for: {setting_text(setting or {})}."] if setting else []),
        *[f"# Tuned by: {c}" for c in commands],
        "defaults:",
        f"  - {experiment}",
        *groups,
        *body,
        "step_sizes:",
        *[f"  {m}: {{{', '.join(f'{k}: {x}' for k, x in v.items())}}}" for m, v in table.items()],
        *_resolver_lines(table),
        "",
    ]
    return "\n".join(lines)


def _resolver_lines(table: dict[str, dict[str, float]]) -> list[str]:
    """``alpha: ${per_method:alpha}`` for every shared key an entry holds (α and β always), and under ``algorithm:``
    one line per algorithm key an entry holds (``lam: ${per_method:lam}``)."""
    held = {k for v in table.values() for k in v}
    top = ["alpha", "beta"] + [
        e for key, (e, _, _) in SEARCHED.items() if not key.startswith(("algorithm.", "alpha", "beta")) and e in held
    ]
    own = [e for key, (e, _, _) in SEARCHED.items() if key.startswith("algorithm.") and e in held]
    lines = [f"{k}: ${{per_method:{k}}}" for k in top]
    return lines + (["algorithm:", *[f"  {k}: ${{per_method:{k}}}" for k in own]] if own else [])


def merge_into(
    existing: Path, experiment: str, setting: dict[str, str], table: dict[str, dict[str, float]], command: str
) -> tuple[dict[str, dict[str, float]], list[str], str | None]:
    """``--merge``: (the merged step-size table, the tuning commands, the earlier report name) for writing over
    ``existing``, a tuned experiment written by this script. Entries of the methods just tuned replace the earlier
    ones (``exact`` follows a newly tuned hvp); the others are kept. Raises ValueError where ``existing`` tunes
    another experiment or setting: its step sizes would be merged into a table they were not tuned for."""
    import yaml

    text = existing.read_text()
    loaded = yaml.safe_load(text) or {}
    defaults = loaded.get("defaults") or []
    if not defaults or defaults[0] != experiment:
        raise ValueError(f"--merge: {existing} is not a tuned {experiment} (its defaults: {defaults})")
    groups, body = _setting_lines(setting)
    fresh = yaml.safe_load("\n".join(["defaults:", f"  - {experiment}", *groups, *body])) or {}
    top = {e for key, (e, _, _) in SEARCHED.items() if not key.startswith("algorithm.")}
    own = {e for key, (e, _, _) in SEARCHED.items() if key.startswith("algorithm.")}
    theirs = {k: v for k, v in loaded.items() if k != "step_sizes" and k not in top}
    if isinstance(theirs.get("algorithm"), dict):
        theirs["algorithm"] = {k: v for k, v in theirs["algorithm"].items() if k not in own} or None
        if theirs["algorithm"] is None:
            del theirs["algorithm"]
    if theirs != fresh:
        raise ValueError(
            f"--merge: {existing} was tuned for another setting ({theirs}); this "
            f"tuning's is {setting_text(setting)}: write it to another file (--tuned-config)"
        )
    merged = {m: dict(v) for m, v in (loaded.get("step_sizes") or {}).items()}
    for method, source in SHARED.items():
        if source in table and method not in table:
            merged.pop(method, None)  # follows its source's new values (chosen_table put them in ``table``)
    merged.update(table)
    commands = [ln.removeprefix("# Tuned by: ") for ln in text.splitlines() if ln.startswith("# Tuned by: ")]
    report = next((ln for ln in text.splitlines() if "best trials: " in ln), None)
    earlier = report.split("best trials: ", 1)[1].split(")", 1)[0] if report else None
    return merged, [*commands, command], earlier


def _configured_rounds(run_dir: Path) -> str:
    import yaml

    return str(yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["num_rounds"])


def ranked(trials: list[Trial]) -> list[Trial]:
    """Finished trials, best first."""
    done = [t for t in trials if t.objective is not None]
    return sorted(done, key=lambda t: t.objective if t.maximize else -t.objective, reverse=True)  # type: ignore


def candidates(tune_dir: Path, methods: list[str], k: int) -> list[str]:
    """``method trial<N> key=value …`` (every searched key) for each method's ``k`` best finished trials (full
    precision)."""
    lines = []
    for method in methods:
        best_k = ranked(read_trials(tune_dir / method))[:k]
        if not best_k:
            raise ValueError(f"no finished trial under {tune_dir / method}")
        lines += [
            f"{method} trial{t.number} " + " ".join(f"{key}={t.overrides[key]}" for key in t.searched) for t in best_k
        ]
    return lines


def _header(trials: list[Trial], *columns: str) -> list[str]:
    """A trial table's header: trial, the searched keys (α, β, λ where the trials have it), then ``columns``."""
    names = ["trial", *(SEARCHED[k][1] for k in (trials[0].searched if trials else {})), *columns]
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _confirmation_lines(confirmed: dict[int, list[Trial]], search: dict[int, Trial], rounds: str) -> list[str]:
    seeds = sorted({t.seed for runs in confirmed.values() for t in runs})
    firsts = [runs[0] for runs in confirmed.values()]
    lines = [
        f"Confirmation over {rounds} rounds on seeds {', '.join(map(str, seeds))} (the best trials again, the "
        "experiment's own horizon; a candidate is rejected if any seed does not finish, collapses or ends at chance "
        "level):",
        "",
        *_header(firsts, "search objective", *[f"seed {s}" for s in seeds], "confirmed (mean)"),
    ]
    for number, runs in confirmed.items():
        searched = search[number].objective if number in search else None
        by_seed = {t.seed: t for t in runs}
        cells = [f"{searched:.4f}" if searched is not None else "–"]
        for s in seeds:
            t = by_seed.get(s)
            if t is None:  # not started: cut off, or dropped once another seed of this candidate stopped
                cells.append("not run")
            elif t.objective is None:
                cells.append("did not finish")
            else:
                cells.append(f"{t.objective:.4f}" + (f" ({t.unstable})" if t.unstable else ""))
        mean = stable_mean(runs)
        cells.append(f"{mean.objective:.4f}" if mean is not None else "rejected")
        lines.append(f"| {number} | {runs[0].cells()} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def report(
    tune_dir: Path, experiment: str, methods: list[str], top: int, setting: dict[str, str] | None = None
) -> tuple[str, dict[str, dict[str, float]]]:
    maximize = True
    choices: dict[str, Trial] = {}
    sections = []
    budget = []
    confirmed_any = False
    first_overrides: dict[str, str] = {}  # the first method's first trial: the protocol's settings
    for method in methods:
        trials = read_trials(tune_dir / method)
        if not trials:
            raise ValueError(f"no trials under {tune_dir / method}")
        done = ranked(trials)
        maximize = all(t.maximize for t in done)  # accuracies; losses (regression) are minimized
        by_trial = read_confirmations(tune_dir / method)
        confirmed = [t for runs in by_trial.values() for t in runs]
        confirmed_ranked = ranked([m for runs in by_trial.values() if (m := stable_mean(runs)) is not None])
        if confirmed and not confirmed_ranked:
            reasons = "; ".join(f"trial {n}: {rejection(runs)}" for n, runs in by_trial.items())
            raise ValueError(
                f"{method}: no confirmed candidate is stable on every seed ({reasons}; logs: "
                f"{tune_dir / method}/confirm-trial*.log); re-run perfedavg-tune to continue cut-off runs, or tune "
                "again with more trials or --confirm candidates"
            )
        if not done:
            raise ValueError(f"no trial finished under {tune_dir / method}")
        choices[method] = pick = (confirmed_ranked or done)[0]
        confirmed_any |= bool(confirmed)
        failed = [t for t in trials if t.objective is None]
        failed_at = ", ".join("(" + ", ".join(f"{v:.3g}" for v in t.searched.values()) + ")" for t in failed)
        failed_keys = ", ".join(SEARCHED[k][1] for k in trials[0].searched)
        walls = [t.wall_s for t in done if t.wall_s]
        confirm_walls = [t.wall_s for t in confirmed if t.wall_s]
        given = trials[0].overrides
        first_overrides = first_overrides or given
        budget.append(
            f"{algorithms.method_title(method)}: {len(trials)} trials × {given.get('num_rounds', '?')} rounds"
            + (f" + {len(confirmed)} confirmation runs" if confirmed else "")
            + f", runs {sum(walls) + sum(confirm_walls):.0f} s in all"
        )
        lines = [
            f"### {algorithms.method_title(method)}",
            "",
            f"{len(trials)} trials, {len(done)} finished, {len(failed)} failed"
            + (f" ({failed_keys} of the failed: {failed_at})" if failed else "")
            + (f"; median run {sorted(walls)[len(walls) // 2]:.0f} s" if walls else "")
            + f". Chosen: trial {pick.number}"
            + (" (best mean over the confirmation seeds, stable on each)" if confirmed else "")
            + f", {pick.values()}.",
            "",
            *_header(done, "final personalized validation objective"),
            *[f"| {t.number} | {t.cells()} | {t.objective:.4f} |" for t in done[:top]],
            "",
        ]
        if confirmed:
            first = confirmed[0]
            names = (f"confirm-trial{first.number}-seed{first.seed}", f"confirm-trial{first.number}")
            rounds = _configured_rounds(next(tune_dir / method / n for n in names if (tune_dir / method / n).is_dir()))
            lines += _confirmation_lines(by_trial, {t.number: t for t in trials}, rounds)
        sections.append("\n".join(lines))
    table = chosen_table(choices)
    given = first_overrides
    rule = (
        "the values of the best candidate stable on every confirmation seed"
        if confirmed_any
        else "the best trial's values"
    )
    shared = ", ".join(f"{m} takes {src}'s" for m, src in SHARED.items() if src in choices and m not in choices)
    head = [
        f"## Step sizes tuned for {experiment}" + (f" ({setting_text(setting)})" if setting else ""),
        "",
        f"Protocol: each client holds out dataset.val_fraction={given.get('dataset.val_fraction', '?')} of its "
        f"training split; runs evaluate on it (eval_split={given.get('eval_split', '?')}), never on test data; "
        f"seed {given.get('seed', '?')}. One Optuna study (TPE) per method over α, β log-uniform"
        + (
            " (and λ, K or adapt_steps, for the methods that tune them)"
            if any(set(t.searched) - {"alpha", "beta"} for t in choices.values())
            else ""
        )
        + "; objective: the final personalized validation "
        + ("accuracy (maximized)." if maximize else "loss (minimized)."),
        "",
        "Budget: " + "; ".join(budget) + " (run time summed over runs; runs went in parallel).",
        "",
        f"Chosen per method ({rule}, 3 significant digits" + (f"; {shared}" if shared else "") + "):",
        "",
        *_chosen_lines(table),
        "",
        f"Best trials per method (top {top}):",
        "",
    ]
    return "\n".join(head) + "\n" + "\n".join(sections), table


def _chosen_lines(table: dict[str, dict[str, float]]) -> list[str]:
    """The chosen values as a Markdown table: a row per method, a column per searched key any entry holds (α, β, λ,
    K, adapt_steps, …; ``–`` where the method does not tune it)."""
    held = {k for v in table.values() for k in v}
    columns = [(e, title) for e, title, _ in SEARCHED.values() if e in held]
    lines = ["| method | " + " | ".join(t for _, t in columns) + " |", "|---|" + "---|" * len(columns)]
    return lines + [f"| {m} | " + " | ".join(str(v.get(e, "–")) for e, _ in columns) + " |" for m, v in table.items()]


def default_config_out(experiment: str) -> Path:
    """Where ``perfedavg experiment=<experiment>_tuned`` finds the tuned experiment: the config tree runs read."""
    from perfedavg.config import preparation

    return preparation.CONF_DIR / "experiment" / f"{experiment}_tuned.yaml"


def write(
    tune_dir: Path,
    experiment: str,
    methods: list[str],
    config_out: Path,
    out: Path,
    command: str,
    overrides: list[str],
    merge: bool = False,
    top: int = 5,
) -> None:
    """Choose each method's values from ``tune_dir`` and write the tuned experiment ``config_out`` and the report
    ``out`` (also printed). Raises ValueError for studies without a finished trial or a refused ``--merge``."""
    setting = settings(overrides)
    text, table = report(tune_dir, experiment, methods, top, setting)
    commands: list[str] = [command]
    report_name = _shown(out)
    if merge and config_out.exists():
        table, commands, earlier = merge_into(
            config_out, experiment, setting, table, f"({', '.join(methods)}) {command}"
        )
        report_name = ", ".join(dict.fromkeys(n for n in (earlier, report_name) if n))
    config_out.parent.mkdir(parents=True, exist_ok=True)
    config_out.write_text(tuned_yaml(experiment, table, commands, setting, report_name))
    with recording(str(out)):
        print(text)
    print(f"tune_report: wrote {config_out} and {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tune_dir", type=Path, help="the studies' directory (perfedavg-tune's --tune-dir)")
    parser.add_argument("--experiment", required=True, help="the tuned experiment (conf/experiment/<name>.yaml)")
    parser.add_argument(
        "--methods", nargs="+", default=["fedavg", "fo", "fd", "hvp"], choices=list(algorithms.methods())
    )
    parser.add_argument("--top", type=int, default=5, help="best trials listed per method")
    parser.add_argument("--config-out", type=Path, help="default: <config dir>/experiment/<experiment>_tuned.yaml")
    parser.add_argument("--out", type=Path, help="default: TUNE_DIR/tune_<experiment>.md")
    parser.add_argument("--command", help="the tuning command, recorded in the generated config")
    parser.add_argument("--merge", action="store_true", help="keep the other methods' entries of --config-out")
    parser.add_argument(
        "--overrides", nargs=argparse.REMAINDER, default=[], help="the tuner's overrides (last): the setting tuned"
    )
    args = parser.parse_args(argv)
    if not args.tune_dir.is_dir():
        print(f"tune_report: error: TUNE_DIR={args.tune_dir} is not a directory", file=sys.stderr)
        return 2
    config_out = args.config_out or default_config_out(args.experiment)
    out = args.out or args.tune_dir / f"tune_{args.experiment}.md"
    command = args.command or " ".join(
        ["python -m perfedavg.analysis.tune_report", *(sys.argv[1:] if argv is None else argv)]
    )
    try:
        write(
            args.tune_dir, args.experiment, args.methods, config_out, out, command, args.overrides, args.merge, args.top
        )
    except ValueError as e:
        print(f"tune_report: error: {e}", file=sys.stderr)
        return 2
    return 0


def _shown(path: Path) -> str:
    """``path`` relative to the working directory where it lies below it (how the generated header names the
    report)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
