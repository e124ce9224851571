"""Nothing silently wrong (issue 21): the data cache, checkpoints and run directories prove what they hold.

Each test reproduces a row of the reliability probe: a data file replaced under the cache with its mtime kept,
damaged cache entries, a damaged checkpoint, a resume on other data, a fresh run into a finished run's directory,
two runs into one directory, and bad data (labels, pixels, images, metadata). Where the project repairs, the results
equal a clean run's; where it refuses, one line and exit 2, and nothing is written.
"""

from __future__ import annotations

import logging
import math
import os
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_images import images, write_parquet
from support import PERFEDAVG, cli, forget_process_caches, without_times

from perfedavg import checkpoint
from perfedavg.config import ConfigError
from perfedavg.data import DataError, array_cache
from perfedavg.run.runner import compose, prepare, run


@pytest.fixture
def cache(own_cache: Path) -> Path:
    """A decoded-data cache of the test's own (conftest's ``own_cache``)."""
    return own_cache


def write_mnist(root: Path, seed: int = 3, labels=None, per_class: int = 6) -> Path:
    x, y = images(per_class, (28, 28), seed=seed)
    return write_parquet(root, x, y if labels is None else labels)


def overrides(data: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "dataset=mnist",
        f"dataset.path={data}",
        f"dataset.cache_dir={tmp_path / 'hf'}",
        "model=mlp",
        "partition=iid",
        "num_clients=3",
        "num_rounds=2",
        "fraction=1.0",
        "local_steps=2",
        "batch_size=4",
        "hessian=fo",
        "backend=inprocess",
        *extra,
    ]


def federate(data: Path, tmp_path: Path, run_dir: Path, *extra: str) -> dict:
    forget_process_caches()  # each run as a new process would see the machine
    return run(compose(overrides(data, tmp_path, *extra)), run_dir)


def one_line_exit_2(out: subprocess.CompletedProcess, *fragments: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "Traceback" not in text, text
    errors = [ln for ln in text.splitlines() if ln.startswith("perfedavg: error:")]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


def entry_file(cache: Path, kind: str, array: str) -> Path:
    (found,) = [p for p in cache.glob(f"mnist-{kind}-*/{array}.npy")]
    return found


# --- 1. content, not mtime ----------------------------------------------------------------------------------------


def test_a_data_file_replaced_with_its_mtime_kept_is_decoded_again(tmp_path: Path, cache: Path) -> None:
    data = write_mnist(tmp_path / "data", seed=3)
    first = federate(data, tmp_path, tmp_path / "a")
    parquet = next(data.glob("train-*.parquet"))
    stat = parquet.stat()
    write_mnist(tmp_path / "other", seed=11)
    (tmp_path / "other" / parquet.name).replace(parquet)  # other images, same name, same size class
    os.utime(parquet, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # `touch -r`: the old mtime
    replaced = federate(data, tmp_path, tmp_path / "b")
    write_mnist(tmp_path / "clean", seed=11)
    clean = federate(tmp_path / "clean", tmp_path, tmp_path / "c", f"dataset.cache_dir={tmp_path / 'hf2'}")
    assert replaced["final"] == clean["final"]  # the new data, exactly as a clean machine reads it
    assert replaced["final"] != first["final"]


# --- 2. checksums ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, array, damage",
    [
        ("train", "images", "random"),
        ("partition", "rows", "zeros"),
        ("train", "images", "truncate"),
        ("train", "key", "remove"),
    ],
)
def test_a_damaged_cache_entry_is_reported_removed_and_rebuilt(
    tmp_path: Path, cache: Path, kind: str, array: str, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    data = write_mnist(tmp_path / "data")
    clean = federate(data, tmp_path, tmp_path / "clean")
    if array == "key":
        (found,) = cache.glob(f"mnist-{kind}-*/key.json")
    else:
        found = entry_file(cache, kind, array)
    size = found.stat().st_size
    if damage == "random":
        with open(found, "r+b") as f:
            f.seek(size // 2)
            f.write(np.random.default_rng(0).integers(0, 256, 256, dtype=np.uint8).tobytes())
    elif damage == "zeros":
        with open(found, "r+b") as f:
            f.seek(size - 64)
            f.write(bytes(48))
    elif damage == "truncate":
        os.truncate(found, size // 2)
    else:
        found.unlink()
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        again = federate(data, tmp_path, tmp_path / "again")
    assert again["final"] == clean["final"]
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and str(found.parent) in warned[0], warned
    forget_process_caches()
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        caplog.clear()
        federate(data, tmp_path, tmp_path / "third")
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]  # repaired for good


def test_cache_entries_are_readable_by_other_users(tmp_path: Path, cache: Path) -> None:
    federate(write_mnist(tmp_path / "data"), tmp_path, tmp_path / "run")
    entries = [p for p in cache.iterdir() if p.name.startswith("mnist-")]
    assert entries
    for entry in entries:
        assert entry.stat().st_mode & 0o055 == 0o055 & ~_umask(), oct(entry.stat().st_mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_checkpoint_damaged_in_place_falls_back_to_the_previous_one(tmp_path: Path, cache: Path, caplog) -> None:
    data = write_mnist(tmp_path / "data")
    run_dir = tmp_path / "run"
    federate(data, tmp_path, run_dir, "num_rounds=3")
    last = checkpoint.checkpoint_path(run_dir)
    size = last.stat().st_size
    with open(last, "r+b") as f:  # zeros in the middle: torch still unpickles it, with other weights
        f.seek(size // 2)
        f.write(bytes(min(4096, size // 4)))
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        state = checkpoint.load(run_dir)
    assert state["round"] == 2  # previous.pt
    warned = [r.getMessage() for r in caplog.records if "using the previous checkpoint (round 2)" in r.getMessage()]
    assert len(warned) == 1 and str(last) in warned[0], warned  # damage in the state: digest; in the file: unreadable
    previous = last.with_name(checkpoint.PREVIOUS_FILE)
    with open(previous, "r+b") as f:
        f.seek(previous.stat().st_size // 2)
        f.write(bytes(min(4096, size // 4)))
    with pytest.raises(checkpoint.CheckpointError, match="previous checkpoint too"):
        checkpoint.load(run_dir)


def test_checkpoint_digest_round_trips(tmp_path: Path) -> None:
    import torch

    state = {
        "round": 3,
        "weights": {"w": torch.randn(3, 4), "b": torch.zeros(0)},
        "sample_rng": np.random.default_rng(1).bit_generator.state,
        "eval_rng": np.random.default_rng(2).bit_generator.state,
        "rounds": [{"round": 1, "train/loss": float("nan")}],
        "client_failures": 0,
        "config": {"alpha": 0.1, "model": {"hidden": [8, 4]}},
    }
    checkpoint.save(tmp_path, state)
    loaded = checkpoint.load(tmp_path)
    assert set(loaded) >= set(state)  # the digest and format fields come on top
    assert all(torch.equal(loaded["weights"][k], w) for k, w in state["weights"].items())
    assert loaded["weights"]["b"].shape == (0,)
    assert (loaded["sample_rng"], loaded["eval_rng"]) == (state["sample_rng"], state["eval_rng"])
    assert math.isnan(loaded["rounds"][0]["train/loss"]) and loaded["rounds"][0]["round"] == 1
    assert (loaded["round"], loaded["client_failures"], loaded["config"]) == (3, 0, state["config"])


# --- 3. a run remembers its data ------------------------------------------------------------------------------------


def test_resume_refuses_other_data(tmp_path: Path, cache: Path) -> None:
    data = write_mnist(tmp_path / "data")
    run_dir = tmp_path / "run"
    federate(data, tmp_path, run_dir, "num_rounds=2")
    parquet = next(data.glob("train-*.parquet"))
    mtime = parquet.stat().st_mtime_ns
    write_mnist(tmp_path / "other", seed=8)
    (tmp_path / "other" / parquet.name).replace(parquet)
    os.utime(parquet, ns=(mtime, mtime))
    forget_process_caches()
    with pytest.raises(ConfigError, match=r"the data changed since the checkpoint.*dataset\.path"):
        prepare(compose(overrides(data, tmp_path, "num_rounds=4", f"resume={run_dir}")))


# --- 4. a run never overwrites another -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_fresh_run_into_a_used_directory_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", "backend=inprocess", f"hydra.run.dir={run_dir}"]
    assert cli(args, tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    out = cli([*args, "seed=4"], tmp_path)
    one_line_exit_2(out, str(run_dir), f"resume={run_dir}")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_a_second_run_into_a_live_runs_directory_writes_nothing(tmp_path: Path) -> None:
    """The lock is taken before Hydra writes `.hydra/`: a run refused for a live owner leaves the directory as is."""
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from perfedavg.run import lock as run_lock\n"
            f"with run_lock.hold({str(run_dir)!r}):\n    print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 120)  # a holder that never starts fails, not hangs
        assert ready and holder.stdout.readline().strip() == "held"
        out = cli(["experiment=smoke", "backend=inprocess", f"hydra.run.dir={run_dir}"], tmp_path)
        one_line_exit_2(out, "in use by another run")
        assert sorted(p.name for p in run_dir.iterdir()) == [".perfedavg.lock"]
    finally:
        holder.kill()
        holder.wait(timeout=30)


# --- 5. data validated where it enters ------------------------------------------------------------------------------


def _labels(kind: str) -> np.ndarray | list:
    base = np.tile(np.arange(10), 6)
    return {"negative": base - 1, "too large": base + 10}[kind]


@pytest.mark.parametrize(
    "kind, fragments",
    [
        ("negative", ["column 'label'", "row 0", "-1", "[0, 10)"]),
        ("too large", ["column 'label'", "row 0", "10", "[0, 10)"]),
    ],
)
def test_labels_outside_the_classes_are_refused_before_anything_starts(tmp_path, cache, kind, fragments) -> None:
    data = write_mnist(tmp_path / "data", labels=_labels(kind))
    with pytest.raises(DataError) as e:
        prepare(compose(overrides(data, tmp_path)))
    message = str(e.value)
    assert "train-00000-of-00001.parquet" in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_labels_as_words_are_refused(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = write_mnist(tmp_path / "data")
    path = next(data.glob("train-*.parquet"))
    table = pq.read_table(path)
    words = pa.array([f"digit{v}" for v in table.column("label").to_pylist()])
    pq.write_table(table.set_column(1, "label", words).replace_schema_metadata(None), path)
    with pytest.raises(DataError, match=r"column 'label'.*row 0.*'digit0'.*integers"):
        prepare(compose(overrides(data, tmp_path)))


def test_an_unreadable_image_is_refused_naming_its_row(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = write_mnist(tmp_path / "data")
    path = next(data.glob("train-*.parquet"))
    table = pq.read_table(path)
    rows = table.column("image").to_pylist()
    rows[7] = {"bytes": b"not a png", "path": None}
    column = pa.array(rows, type=table.schema.field("image").type)
    pq.write_table(table.set_column(0, "image", column).replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(DataError, match=r"column 'image', row 7: the image cannot be decoded"):
        prepare(compose(overrides(data, tmp_path)))


def test_a_parquet_without_hugging_face_metadata_loads_the_same(tmp_path: Path, cache: Path) -> None:
    import pyarrow.parquet as pq

    with_meta = write_mnist(tmp_path / "meta")
    without = write_mnist(tmp_path / "plain")
    path = next(without.glob("train-*.parquet"))
    pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)
    a = federate(with_meta, tmp_path, tmp_path / "a")
    b = federate(without, tmp_path, tmp_path / "b", f"dataset.cache_dir={tmp_path / 'hf2'}")
    assert a["final"] == b["final"]


def test_an_empty_train_split_is_refused(tmp_path: Path, cache: Path) -> None:
    import pyarrow.parquet as pq

    data = write_mnist(tmp_path / "data")
    path = next(data.glob("train-*.parquet"))
    table = pq.read_table(path)
    pq.write_table(table.slice(0, 0), path)
    with pytest.raises(DataError, match=r"no rows"):
        prepare(compose(overrides(data, tmp_path)))


# --- 6. environment variables are checked like keys -----------------------------------------------------------------


@pytest.mark.parametrize("value, fragment", [("abc", "must be a number of GB"), ("-1", "must be ≥ 0")])
def test_client_cache_bound_is_checked_like_a_key(tmp_path: Path, value: str, fragment: str, monkeypatch) -> None:
    monkeypatch.setenv("PERFEDAVG_CLIENT_CACHE_GB", value)
    with pytest.raises(ConfigError, match=f"PERFEDAVG_CLIENT_CACHE_GB={value!r}: {fragment}"):
        prepare(compose(["experiment=smoke", "backend=inprocess"]))


def test_a_cache_dir_that_is_a_file_is_refused(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="PERFEDAVG_CACHE_DIR="):
        prepare(compose(["experiment=smoke", "backend=inprocess"]))


def test_an_unwritable_cache_says_so_and_the_run_goes_on(tmp_path: Path, cache: Path, monkeypatch, caplog) -> None:
    if os.geteuid() == 0:
        monkeypatch.setattr(array_cache, "_make_temporary", _refuse)
    else:
        cache.mkdir(parents=True)
        cache.chmod(0o500)
    data = write_mnist(tmp_path / "data")
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        summary = federate(data, tmp_path, tmp_path / "run")
    assert summary["final"]
    assert any("PERFEDAVG_CACHE_DIR" in r.getMessage() for r in caplog.records)


def _refuse(parent: Path, prefix: str) -> Path:
    raise PermissionError(13, "Permission denied", str(parent))


def test_nan_pixels_are_refused_naming_their_row(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = images(6, (28, 28), seed=3)
    pixels = (x / 255.0).astype(np.float32)
    pixels[3, 5, 7] = np.nan
    data = tmp_path / "data"
    data.mkdir()
    column = pa.array([row.tolist() for row in pixels], type=pa.list_(pa.list_(pa.float32())))
    pq.write_table(pa.table({"image": column, "label": pa.array(y, type=pa.int64())}), data / "train-00000.parquet")
    with pytest.raises(DataError, match=r"column 'image', row 3: a pixel is nan; images must be finite"):
        prepare(compose(overrides(data, tmp_path)))


SMOKE = ["experiment=smoke", "num_rounds=2", "backend=inprocess"]


@pytest.mark.slow
def test_a_sweep_jobs_directory_resumes_by_the_path_it_printed(tmp_path: Path) -> None:
    """A sweep job's directory name holds ``=`` and ``,`` (``1_seed=1``); ``resume=`` takes it as printed."""
    import json

    sweep = tmp_path / "S"
    out = cli(["-m", *SMOKE, "seed=0,1", "hessian=fo,hvp", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    job = sweep / "3_seed=1,hessian=hvp"
    assert (job / "metrics.json").exists()
    out = cli([f"resume={job}", "num_rounds=3"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resuming after round 2 of 3" in out.stdout + out.stderr
    rounds = json.loads((job / "metrics.json").read_text())["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3]


@pytest.mark.slow
def test_a_damaged_metrics_json_is_named_and_rewritten_from_the_checkpoint(tmp_path: Path) -> None:
    """``resume=auto`` over a finished run whose metrics.json was cut short: one warning naming the file, exit 0,
    and the file written anew with the same final metrics (from the checkpoint's history; no round runs again)."""
    import json

    run_dir = tmp_path / "run"
    out = cli([*SMOKE, f"hydra.run.dir={run_dir}"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = run_dir / "metrics.json"
    clean = json.loads(metrics.read_text())
    metrics.write_text(metrics.read_text()[:40])
    out = cli([*SMOKE, "resume=auto", f"hydra.run.dir={run_dir}"], tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "Traceback" not in log, log[-2000:]
    assert f"{metrics} cannot be read (JSONDecodeError" in log and "rewriting it from the run's checkpoint" in log
    assert "round 1/2" not in log and "round 2/2" not in log  # nothing ran again
    again = json.loads(metrics.read_text())
    assert again["final"] == clean["final"] and again["rounds"] == clean["rounds"]


def test_json_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch) -> None:
    """perfedavg.atomic: the old file stays until the new one is complete, and a failed write leaves no temporary."""
    from perfedavg import atomic

    target = tmp_path / "metrics.json"
    atomic.write_text(target, '{"a": 1}')
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text(target, '{"a": 2}')
    assert target.read_text() == '{"a": 1}' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.slow
def test_extending_a_finished_run_gives_the_longer_runs_metrics_evaluation_included(tmp_path: Path) -> None:
    """4 rounds extended to 8 with half the clients evaluated every 3 rounds: every round's metrics, the evaluation
    sample's included, equal a fresh 8-round run's (the sample is drawn from the seed and the round). The short run's
    last round was evaluated too (a run's last round always is): that evaluation is the one addition."""
    import json

    args = ["experiment=smoke", "backend=inprocess", "eval_every=3", "eval_fraction=0.5"]
    short, fresh = tmp_path / "short", tmp_path / "fresh"
    assert cli([*args, "num_rounds=4", f"hydra.run.dir={short}"], tmp_path).returncode == 0
    out = cli([f"resume={short}", "num_rounds=8"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert cli([*args, "num_rounds=8", f"hydra.run.dir={fresh}"], tmp_path).returncode == 0
    extended, whole = (json.loads((d / "metrics.json").read_text()) for d in (short, fresh))

    for longer, fresh_row in zip(without_times(extended["rounds"]), without_times(whole["rounds"]), strict=True):
        extra = {k: v for k, v in longer.items() if k not in fresh_row}
        assert {k: longer[k] for k in fresh_row} == fresh_row
        assert not extra or (longer["round"] == 4 and all(k.startswith(("eval/", "clients/eval")) for k in extra))
    assert extended["final"] == whole["final"]
    assert [r["round"] for r in whole["rounds"] if "eval/global_loss" in r] == [3, 6, 8]


@pytest.mark.slow
def test_a_resume_keeps_the_thread_count(tmp_path: Path) -> None:
    """``client_cpus`` is each client's torch thread count, which can move the last bits: a resume refuses to
    change it, naming it."""
    run_dir = tmp_path / "run"
    assert cli(["experiment=smoke", "backend=inprocess", f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    out = cli([f"resume={run_dir}", "num_rounds=4", "client_cpus=2"], tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"perfedavg: error: resume={run_dir}: the config differs" in out.stderr
    assert "client_cpus: 1.0 → 2.0" in out.stderr


def test_a_null_label_is_named_by_its_row_not_a_huge_number(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = write_mnist(tmp_path / "data")
    path = data / "train-00000-of-00001.parquet"
    table = pq.read_table(path)
    labels = table.column("label").to_pylist()
    labels[7] = None
    pq.write_table(table.set_column(1, "label", pa.array(labels, type=pa.int64())), path)
    with pytest.raises(DataError) as e:
        prepare(compose(overrides(data, tmp_path)))
    message = str(e.value)
    assert "column 'label', row 7: no value (null; 1 such rows)" in message and "train-00000-of-00001" in message
    assert "9223372036854775808" not in message


def test_an_empty_extra_train_file_is_named(tmp_path: Path, cache: Path) -> None:
    """A 0-byte ``train-00001-of-00002.parquet`` beside the split: the message names that file, not a library error."""
    data = write_mnist(tmp_path / "data")
    (data / "train-00001-of-00002.parquet").write_bytes(b"")
    with pytest.raises(DataError) as e:
        prepare(compose(overrides(data, tmp_path)))
    message = str(e.value)
    assert "train-00001-of-00002.parquet (0 bytes): not a parquet file" in message and "\n" not in message


def test_every_train_file_is_read_and_the_log_line_says_which(tmp_path: Path, cache: Path, caplog) -> None:
    """An extra ``train-00001-of-00002.parquet`` is part of the split (as the hub's layout means): its rows are read,
    and the line that counts the images names the files."""
    import shutil

    data = write_mnist(tmp_path / "data")
    shutil.copy(data / "train-00000-of-00001.parquet", data / "train-00001-of-00002.parquet")
    with caplog.at_level(logging.INFO, logger="perfedavg"):
        federate(data, tmp_path, tmp_path / "run")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("decoding the"))
    assert line.startswith("decoding the 120 images of dataset=mnist from dataset.path=")
    assert "train-00000-of-00001.parquet, train-00001-of-00002.parquet" in line


@pytest.mark.parametrize(
    "where, before, after",
    [
        ("mnist-train-*/key.json", '"labels": [', '"lacels": ['),  # a key name under "checksums"
        ("mnist-partition-*/key.json", '"rows": [', '"rowz": ['),
        ("index/mnist-*.json", '"label": "label"', '"lacel": "label"'),  # the split's index
    ],
    ids=["entry checksums", "partition checksums", "index"],
)
def test_damaged_cache_metadata_is_named_and_rebuilt(
    tmp_path: Path, cache: Path, where: str, before: str, after: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A byte changed in a metadata file that still parses (a key name): every metadata file carries a seal, so the
    change is found, named in one warning, and the entry (or index) rebuilt; the run equals a clean one, and the
    next run warns no more."""
    data = write_mnist(tmp_path / "data")
    clean = federate(data, tmp_path, tmp_path / "clean")
    (found,) = cache.glob(where)
    text = found.read_text()
    assert before in text
    found.write_text(text.replace(before, after, 1))
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        again = federate(data, tmp_path, tmp_path / "again")
    assert again["final"] == clean["final"]
    warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warned) == 1 and str(found.parent if found.name == "key.json" else found) in warned[0], warned
    forget_process_caches()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        federate(data, tmp_path, tmp_path / "third")
    assert not [r for r in caplog.records if "damaged" in r.getMessage()]


def test_a_cache_entry_that_is_a_symlink_loop_is_named_removed_and_rebuilt(
    tmp_path: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import shutil

    data = write_mnist(tmp_path / "data")
    clean = federate(data, tmp_path, tmp_path / "clean")
    (entry,) = [p for p in cache.glob("mnist-train-*") if p.is_dir()]
    shutil.rmtree(entry)
    entry.symlink_to(entry.name)  # points at itself
    with caplog.at_level(logging.WARNING, logger="perfedavg"):
        again = federate(data, tmp_path, tmp_path / "again")
    assert again["final"] == clean["final"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"data cache entry {entry} is damaged (not a directory)" in m for m in messages), messages
    assert not any("cannot be written" in m for m in messages)  # the cache itself is fine
    assert entry.is_dir() and not entry.is_symlink()


def test_a_local_parquet_split_leaves_no_derived_copy_to_trust(tmp_path: Path, cache: Path) -> None:
    """Local parquet files are read straight into the project's own checked cache: no ``datasets`` Arrow copy is
    made (one damaged there used to be decoded under a valid checksum), and the run equals a run whose decoded cache
    was rebuilt from scratch."""
    import shutil

    data = write_mnist(tmp_path / "data")
    first = federate(data, tmp_path, tmp_path / "first")
    assert not list((tmp_path / "hf").rglob("*.arrow"))  # dataset.cache_dir: where datasets would prepare its copy
    shutil.rmtree(cache)
    assert federate(data, tmp_path, tmp_path / "again")["final"] == first["final"]


def test_a_ragged_float_image_is_named_by_its_row(tmp_path: Path, cache: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = images(6, (28, 28), seed=3)
    rows = [(r / 255.0).astype(np.float32).tolist() for r in x]
    rows[4] = rows[4][:20]  # 20 rows of pixels instead of 28
    data = tmp_path / "data"
    data.mkdir()
    column = pa.array(rows, type=pa.list_(pa.list_(pa.float32())))
    pq.write_table(pa.table({"image": column, "label": pa.array(y, type=pa.int64())}), data / "train-00000.parquet")
    with pytest.raises(DataError) as e:
        prepare(compose(overrides(data, tmp_path)))
    message = str(e.value)
    assert "column 'image', row 4: image of shape [20, 28], row 0's is [28, 28]" in message
    assert "partition" not in message and "\n" not in message


def test_a_resume_with_another_experiment_names_the_experiment(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert cli([*SMOKE, f"hydra.run.dir={run_dir}"], tmp_path).returncode == 0
    out = cli([f"resume={run_dir}", "experiment=paper_digits"], tmp_path)
    one_line_exit_2(out, "experiment=paper_digits, but the run was started with experiment=smoke")


@pytest.mark.slow
def test_two_runs_started_at_once_get_a_directory_each(tmp_path: Path) -> None:
    """Without ``hydra.run.dir`` each run gets Hydra's dated directory, named to the microsecond: two runs started
    in the same second both finish, each in its own directory with its own config."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            [*PERFEDAVG, *SMOKE, "num_rounds=1", f"seed={seed}"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for seed in (0, 1)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    runs = sorted(p.parent for p in tmp_path.glob("outputs/*/*/metrics.json"))
    assert len(runs) == 2
    import yaml

    assert sorted(yaml.safe_load((r / ".hydra" / "config.yaml").read_text())["seed"] for r in runs) == [0, 1]
