"""The figures the README quotes from short commands are today's: each is recomputed here and compared.

Longer figures (benchmarks, reproductions) live in files under ``scripts/results/`` written by the scripts that
measured them; the README names the command for each.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from perfedavg.runner import compose, run

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
#: Rounded to 4 decimals in the README; on another CPU or torch build kernels may round differently (1e-5 relative
#: per the golden test), so allow the rounding plus a little.
TOL = 2e-4
#: The default run's global model ends at a loss near 3.8 and rising: a last-bit difference in one kernel between
#: CPUs grows over 30 rounds. eval/global_loss 3.7788 and train/loss 3.3786 as an earlier session measured them (its CI
#: passed at 2e-4, on the AMD EPYC machines of the README's benchmarks), 3.8352 and 3.4232 for the same code (commit
#: 33fbfd4) on an Intel Xeon with AVX-512; the accuracies and the personalized loss agreed to 1e-4. These two are
#: compared to 3 %; a change of the code that moves them less is caught by tests/test_golden.py (the same config, 3
#: rounds, to 1e-5).
CHAOTIC = {"eval/global_loss", "train/loss"}
CHAOTIC_REL = 0.03


def quoted_final() -> dict[str, float]:
    """The metrics of the README's measured default run (its ``done in … s: …`` line)."""
    block = README.split("Measured default run", 1)[1].split("```", 2)[1]
    line = next(ln for ln in block.splitlines() if "done in" in ln)
    return {k: float(v) for k, v in re.findall(r"((?:eval|train)/\w+) ([0-9.]+)", line)}


@pytest.mark.slow
def test_the_readme_default_run_is_todays(tmp_path: Path) -> None:
    """`bash scripts/run.sh` (the default config on Ray) equals the in-process run metric for metric
    (tests/test_federation.py), so the in-process run checks the quoted line."""
    quoted = quoted_final()
    assert set(quoted) == {
        "eval/global_loss",
        "eval/global_acc",
        "eval/personalized_loss",
        "eval/personalized_acc",
        "train/loss",
    }
    final = run(compose(["backend=inprocess"]), tmp_path)["final"]
    for key, value in quoted.items():
        tolerance = {"abs": TOL, "rel": CHAOTIC_REL} if key in CHAOTIC else {"abs": TOL}
        assert final[key] == pytest.approx(value, **tolerance), (key, final[key], value)


def test_the_readme_smoke_figures_are_todays(tmp_path: Path) -> None:
    """The `flwr run` section quotes `perfedavg experiment=smoke`'s round 3."""
    found = re.search(r"round 3: train/loss ([0-9.]+), accuracy ([0-9.]+) → ([0-9.]+)", README)
    assert found, "the README no longer quotes the smoke run's round 3"
    loss, global_acc, personalized_acc = map(float, found.groups())
    last = run(compose(["experiment=smoke", "backend=inprocess"]), tmp_path)["rounds"][2]
    assert last["train/loss"] == pytest.approx(loss, abs=TOL)
    assert last["eval/global_acc"] == pytest.approx(global_acc, abs=2e-3)  # quoted to 3 decimals
    assert last["eval/personalized_acc"] == pytest.approx(personalized_acc, abs=2e-3)
