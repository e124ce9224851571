"""A run whose training loss blows up but stays finite: the rules that call it *collapsed* or *at chance level*, and
the one warning a run prints when its loss blows up.

A model that overflows stops the run (the loop refuses non-finite weights), but a finite blow-up does not: tuned
FedAvg on MNIST's paper split (β = 0.288, seed 5) went from a training loss of 0.017 to 3.6e9 in two rounds at round
807 and then ran its last 190 rounds at chance level, with nothing on the console to say so. The same rule marks such
runs in the tuner's confirmation (:mod:`perfedavg.analysis.tune_report`) and in the stability check.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

#: A round *collapsed* where its training loss is not finite or exceeds this multiple of the run's first round's.
#: Far beyond a healthy run's drift (on MNIST's paper split FO's meta-loss wanders to 5–10× its first value while it
#: personalizes at 0.95), and reached within a round or two by the collapses seen (10³–10¹⁷ times it).
COLLAPSE_FACTOR = 100.0


#: A run *ended at chance level* where its final accuracy is at most this multiple of 1 / classes (0.15 for 10):
#: its model diverged but its values stayed finite, so nothing stopped it.
CHANCE_FACTOR = 1.5


def at_chance(accuracy: float, num_classes: int) -> bool:
    """Whether a final ``accuracy`` over ``num_classes`` classes is at chance level (:data:`CHANCE_FACTOR`); never
    for fewer than two classes (regression, or no class count)."""
    return num_classes > 1 and accuracy <= CHANCE_FACTOR / num_classes


def collapsed_round(rounds: Sequence[Mapping[str, float]]) -> int | None:
    """The first round (of a run's per-round metrics, first to last) whose ``train/loss`` is not finite or exceeds
    :data:`COLLAPSE_FACTOR` × the first round's; None where there is none. O(rounds)."""
    if not rounds:
        return None
    first = rounds[0].get("train/loss", math.nan)
    for r in rounds:
        loss = r.get("train/loss", math.nan)
        if not math.isfinite(loss) or loss > COLLAPSE_FACTOR * first:
            return int(r["round"])
    return None


def collapse_note(rounds: Sequence[Mapping[str, float]]) -> str:
    """`` (DIVERGED: …)`` for a run's closing line where its training loss collapsed at some round; empty otherwise."""
    at = collapsed_round(rounds)
    if at is None:
        return ""
    return f" (DIVERGED: the training loss left {COLLAPSE_FACTOR:g}× round 1's at round {at}; see the warning above)"


class LossWatch:
    """Warns once per process when the latest round's training loss leaves :data:`COLLAPSE_FACTOR` × the run's first
    round's (a resumed run compares with the checkpoint's first round, and warns again if it resumes collapsed)."""

    def __init__(self, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta
        self.warned = False

    def observe(self, rounds: Sequence[Mapping[str, float]]) -> str | None:
        """The warning for the latest of ``rounds`` (first to last), or None: before the first collapse, after the
        warning, or where round 1's loss gives no scale (not a positive number)."""
        if self.warned or len(rounds) < 2:
            return None
        first, latest = rounds[0].get("train/loss", math.nan), rounds[-1]
        if not (math.isfinite(first) and first > 0) or collapsed_round([rounds[0], latest]) is None:
            return None
        self.warned = True
        return (
            f"round {int(latest['round'])}: the training loss ({latest['train/loss']:.4g}) is over "
            f"{COLLAPSE_FACTOR:g}× round 1's ({first:.4g}): the run is diverging and its models may end at chance "
            f"level (try smaller step sizes: alpha={self.alpha}, beta={self.beta})"
        )
