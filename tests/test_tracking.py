"""The HPARAMS record: the keys the run reads, the ones the command chose among them, integers stay integers, and
no experiment record of the run's own (TensorBoard builds one from all the runs in a logdir)."""

from __future__ import annotations

from pathlib import Path

import yaml

from perfedavg.config import to_container
from perfedavg.federation.record import NOT_HPARAMS, hparams_of, run_overrides
from perfedavg.federation.tracking import RunLogger
from perfedavg.run.runner import CONF_DIR, compose


def read_hparams_record(logdir: Path):
    """The HParams plugin's records in the event file: {tag: content}, and the session start info."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(logdir)).Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    return content, metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])


def test_overridden_keys_lead_and_integers_are_written_as_integers(tmp_path: Path) -> None:
    from tensorboard.plugins.hparams import metadata

    overrides = ["hessian=fo", "seed=3", "dataset.path=/data", "model=mlp", "model.hidden=[8,4]", "backend=inprocess"]
    cfg = to_container(compose(["dataset=regression", "model=mlp", "hessian=fo", "seed=3", "model.hidden=[8,4]"]))
    params, chosen = hparams_of(cfg, overrides)
    assert chosen == ["hessian", "seed", "model", "model.hidden"]  # where/how keys (path, backend) are not hparams
    assert list(params)[:4] == chosen
    assert params["seed"] == 3 and params["model.hidden"] == "[8, 4]" and params["hessian"] == "fo"

    logger = RunLogger(tmp_path)
    logger.hparams(params)
    logger.close()
    content, start = read_hparams_record(tmp_path)
    assert set(start.hparams) == set(params)
    assert metadata.EXPERIMENT_TAG not in content  # TensorBoard builds the experiment from every run's session
    assert start.hparams["seed"].string_value == "3"  # not the float 3.0 ("3.000" in the table)
    assert start.hparams["num_rounds"].string_value == str(cfg["num_rounds"])
    assert start.hparams["alpha"].number_value == cfg["alpha"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert EventAccumulator(str(tmp_path)).Reload().Tags()["scalars"] == []  # no copies of the final values


def test_run_overrides_are_read_from_the_hydra_record(tmp_path: Path) -> None:
    assert run_overrides(tmp_path) == []
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["hessian=hvp", "seed=1"]))
    assert run_overrides(tmp_path) == ["hessian=hvp", "seed=1"]


def test_keys_left_out_of_hparams_are_those_left_out_of_sweep_run_names() -> None:
    config = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    assert set(config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"]) == NOT_HPARAMS


def test_the_algorithm_keys_a_run_reads_are_hyperparameters_and_the_others_are_not() -> None:
    pfedme = hparams_of(to_container(compose(["algorithm=pfedme", "algorithm.inner_steps=3"])))[0]
    assert (pfedme["algorithm"], pfedme["algorithm.lam"], pfedme["algorithm.inner_steps"]) == ("pfedme", 15.0, 3)
    assert pfedme["algorithm.server_mix"] == 1.0
    ditto = hparams_of(to_container(compose(["algorithm=ditto"])))[0]
    assert ditto["algorithm.lam"] == 0.1 and "algorithm.inner_steps" not in ditto
    assert not any(k.startswith("algorithm.") for k in hparams_of(to_container(compose([])))[0])
