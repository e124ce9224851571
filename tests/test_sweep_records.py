"""A refused sweep writes nothing that describes it: the jobs' ``.hydra/`` records and ``multirun.yaml`` stay as the
runs made them (issue 36 item 3; perfedavg/run/sweep_records.py)."""

from __future__ import annotations

from pathlib import Path

from support import cli

from perfedavg.run import sweep_records

SWEEP = ["-m", "seed=0,1", "num_rounds=1", "num_clients=4", "backend=inprocess"]


def _records(sweep: Path) -> dict[str, bytes]:
    files = [sweep / "multirun.yaml", *sorted(sweep.glob("*/.hydra/*.yaml"))]
    return {str(f.relative_to(sweep)): f.read_bytes() for f in files}


def test_a_refused_sweep_leaves_the_jobs_records_as_they_were(tmp_path: Path) -> None:
    sweep = tmp_path / "S"
    first = cli([*SWEEP, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert first.returncode == 0, first.stderr
    before = _records(sweep)
    assert len(before) == 7  # multirun.yaml and three records for each of the two jobs
    for extra in ([], ["resume=auto"]):
        again = cli([*SWEEP, "alpha=0.2", *extra, f"hydra.sweep.dir={sweep}"], tmp_path)
        text = again.stdout + again.stderr
        assert again.returncode == 2, text
        assert "Traceback" not in text
        assert ("alpha: 0.05 → 0.2" if extra else "holds a finished run") in text
        assert _records(sweep) == before  # overrides.yaml, config.yaml and multirun.yaml still say alpha=0.05


def test_restore_puts_back_only_what_it_copied(tmp_path: Path) -> None:
    sweep = tmp_path / "S"
    (sweep / "0_seed=0" / ".hydra").mkdir(parents=True)
    (sweep / "0_seed=0" / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    (sweep / "multirun.yaml").write_text("alpha: 0.05\n")
    sweep_records.back_up(sweep)
    (sweep / "0_seed=0" / ".hydra" / "overrides.yaml").write_text("- seed=0\n- alpha=0.2\n")
    (sweep / "0_seed=0" / ".hydra" / "config.yaml").write_text("alpha: 0.2\n")  # new: not in the copy
    (sweep / "multirun.yaml").write_text("alpha: 0.2\n")
    (sweep / "2_seed=2" / ".hydra").mkdir(parents=True)  # a job directory new to this sweep
    (sweep / "2_seed=2" / ".hydra" / "overrides.yaml").write_text("- seed=2\n")
    sweep_records.restore(sweep, sweep / "0_seed=0")
    sweep_records.restore(sweep, sweep / "2_seed=2")
    assert (sweep / "0_seed=0" / ".hydra" / "overrides.yaml").read_text() == "- seed=0\n"
    assert not (sweep / "0_seed=0" / ".hydra" / "config.yaml").exists()
    assert (sweep / "multirun.yaml").read_text() == "alpha: 0.05\n"
    assert (sweep / "2_seed=2" / ".hydra" / "overrides.yaml").read_text() == "- seed=2\n"  # had nothing to restore
