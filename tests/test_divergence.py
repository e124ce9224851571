"""A finite blow-up of the training loss (perfedavg.federation.divergence): the rule, the one warning a run prints,
and its closing line's note. Tuned FedAvg on MNIST's paper split (β = 0.288, seed 5) went from 0.017 to 3.6e9 at
round 807 and ended at chance level with nothing on the console to say so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support import federate

from perfedavg.federation.console import done_line
from perfedavg.federation.divergence import LossWatch, at_chance, collapse_note, collapsed_round

SMALL = ["num_rounds=4", "num_clients=6", "fraction=0.5", "local_steps=2", "eval_every=2", "backend=inprocess"]


def rounds(*losses: float) -> list[dict[str, float]]:
    return [{"round": i + 1, "train/loss": loss} for i, loss in enumerate(losses)]


def test_a_round_collapses_beyond_100_times_the_first_rounds_loss_or_when_not_finite() -> None:
    assert collapsed_round(rounds(1.0, 5.0, 99.0, 2.0)) is None  # a healthy run's drift
    assert collapsed_round(rounds(1.0, 5.0, 101.0, 2.0)) == 3
    assert collapsed_round(rounds(1.0, float("nan"))) == 2
    assert collapsed_round([]) is None


def test_chance_level_is_at_most_one_and_a_half_times_a_uniform_guess() -> None:
    assert at_chance(0.15, 10) and at_chance(0.052, 10) and not at_chance(0.151, 10)
    assert at_chance(0.75, 2) and not at_chance(0.76, 2)
    assert not at_chance(0.0, 0) and not at_chance(0.0, 1)  # no classes, no chance level


def test_the_watch_warns_once_at_the_first_collapsed_round_naming_the_step_sizes() -> None:
    watch, seen = LossWatch(0.144, 0.288), []
    history = rounds(0.02, 0.017, 10862.0, 3.6e9, 1.7e5)
    for n in range(1, len(history) + 1):
        seen.append(watch.observe(history[:n]))
    assert seen[:2] == [None, None] and seen[3:] == [None, None]
    assert seen[2] == (
        "round 3: the training loss (1.086e+04) is over 100× round 1's (0.02): the run is diverging and its models "
        "may end at chance level (try smaller step sizes: alpha=0.144, beta=0.288)"
    )


@pytest.mark.parametrize("first", [0.0, float("nan")])
def test_no_scale_no_warning(first: float) -> None:
    """A first round's loss of 0 (or not a number) gives no scale to compare with: no warning (the loop stops a run
    whose updates are not finite by itself)."""
    assert LossWatch(0.1, 0.1).observe(rounds(first, 5.0)) is None


def test_a_run_whose_loss_blows_up_warns_once_and_says_so_at_its_end(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        summary = federate([*SMALL, "algorithm=fedavg", "beta=3"], tmp_path / "blown")
    warned = [r.getMessage() for r in caplog.records if "is diverging" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("round 2: the training loss") and "beta=3.0" in warned[0]
    at = collapsed_round(summary["rounds"])
    assert at == 2
    summary["wall_s"] = 1.0
    assert done_line(summary).endswith(
        f" (DIVERGED: the training loss left 100× round 1's at round {at}; see the warning above)"
    )


def test_a_healthy_run_neither_warns_nor_notes(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        summary = federate([*SMALL, "algorithm=fedavg"], tmp_path / "calm")
    assert not [r for r in caplog.records if "is diverging" in r.getMessage()]
    assert collapse_note(summary["rounds"]) == ""
