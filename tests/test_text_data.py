"""Naturally partitioned text (dataset=shakespeare / text, perfedavg.data.text) on small parquet files the tests
write: windows and positional splits, the fixed vocabulary, client selection, refusals that name the row, and a
federation of the character LSTM."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from support import federate

from perfedavg.data import DataError, check_dataset, load_client
from perfedavg.data import text as text_data

LINE = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"


def roles_file(path: Path, rows: list[tuple[str, str, str | None]]) -> Path:
    table = pa.table({"play": [r[0] for r in rows], "role": [r[1] for r in rows], "text": [r[2] for r in rows]})
    pq.write_table(table, path)
    return path


def params(path: Path, **extra) -> dict:
    return {
        "name": "shakespeare",
        "path": str(path),
        "client_columns": ["play", "role"],
        "text_column": "text",
        "min_chars": 60,
        "input_shape": [8],
        "num_classes": 81,
        "test_fraction": 0.2,
        "val_fraction": 0.0,
        "partition": {"name": "natural"},
        **extra,
    }


@pytest.fixture()
def corpus_file(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(tmp_path / "cache"))
    text_data._corpus.cache_clear()
    rows = [("hamlet", "HAMLET", LINE * 3), ("hamlet", "OPHELIA", LINE[:70] + "é—$"), ("tempest", "ARIEL", "Hi.")]
    rows += [("tempest", f"SPIRIT{i}", LINE[i:] * 2) for i in range(5)]
    return roles_file(tmp_path / "roles.parquet", rows)


def test_windows_are_split_by_position_and_never_cross(corpus_file: Path) -> None:
    p = params(corpus_file)
    data = text_data.corpus(p)
    rows = text_data.client_rows(p, 7, 0, data)
    assert len(rows) == 7 and 2 not in rows.tolist()  # ARIEL's 3 characters are below min_chars
    for cid in range(7):
        client = load_client(p, cid, 7, 0)
        ids = torch.from_numpy(data.row(int(rows[cid])).astype("int64"))
        n = int(ids.shape[0])
        train_chars = n - round(n * 0.2)
        assert client.x_train.shape == (train_chars - 8, 8) and client.x_test.shape == (n - train_chars - 8, 8)
        for i in (0, client.num_train - 1):  # each window is 8 consecutive characters, its target the next
            assert torch.equal(client.x_train[i], ids[i : i + 8]) and client.y_train[i] == ids[i + 8]
        # the last training target precedes the test part; the first test window starts inside it
        assert client.num_train + 8 == train_chars
        assert torch.equal(client.x_test[0], ids[train_chars : train_chars + 8])
        assert client.x_train.dtype == torch.int64 and int(client.x_train.max()) < 81


def test_the_vocabulary_is_leafs_with_one_unknown_symbol() -> None:
    assert len(text_data.VOCABULARY) == 80 and text_data.NUM_CLASSES == 81
    ids = text_data.encode("Ab\né—$")
    assert ids.tolist() == [text_data.VOCABULARY.index("A"), text_data.VOCABULARY.index("b"), 0, 80, 80, 80]


def test_clients_are_a_seeded_sample_of_the_eligible_rows(corpus_file: Path) -> None:
    p = params(corpus_file)
    data = text_data.corpus(p)
    first, again, other = (text_data.client_rows(p, 4, s, data).tolist() for s in (0, 0, 1))
    assert first == again and first != other and len(set(first)) == 4
    with pytest.raises(DataError, match=r"num_clients=8: dataset=shakespeare has 7 clients with at least "):
        check_dataset(p, 8, 0)
    with pytest.raises(DataError, match=r"dataset.min_chars=20: with windows of 8 characters.*min_chars ≥ 43"):
        check_dataset(params(corpus_file, min_chars=20), 2, 0)


def test_validation_is_held_out_by_position_too(corpus_file: Path) -> None:
    client = load_client(params(corpus_file, val_fraction=0.25), 0, 7, 0)
    plain = load_client(params(corpus_file), 0, 7, 0)
    assert client.num_val > 0 and client.num_train < plain.num_train
    assert torch.equal(client.x_train, plain.x_train[: client.num_train])  # the training part's start, untouched
    assert torch.equal(client.x_test, plain.x_test)


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([("hamlet", "HAMLET", LINE), ("hamlet", "HORATIO", None)], "row 1 has no value in column text"),
        ([("hamlet", "HAMLET", LINE), ("hamlet", None, LINE)], "row 1 has no value in column role"),
        ([("hamlet", "HAMLET", LINE), ("hamlet", "HAMLET", LINE)], "row 1 names client 'hamlet/HAMLET' again"),
    ],
)
def test_bad_rows_are_refused_naming_them(tmp_path: Path, monkeypatch, rows, fragment: str) -> None:
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(tmp_path / "cache"))
    path = roles_file(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError, match=fragment):
        check_dataset(params(path), 1, 0)


def test_columns_that_are_missing_or_not_text_are_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PERFEDAVG_CACHE_DIR", str(tmp_path / "cache"))
    path = roles_file(tmp_path / "roles.parquet", [("hamlet", "HAMLET", LINE)])
    with pytest.raises(DataError, match=r"has no column speaker .*its columns: play, role, text"):
        check_dataset(params(path, client_columns=["speaker"]), 1, 0)
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"client": ["a"], "text": [3]}), numbers)
    with pytest.raises(DataError, match=r"column text \(dataset.text_column\) holds int64, not text"):
        check_dataset(params(numbers, client_columns=["client"]), 1, 0)
    with pytest.raises(DataError, match=r"dataset.path=.*nowhere: no such file or directory"):
        check_dataset(params(tmp_path / "nowhere"), 1, 0)


LSTM = ["model=lstm", "model.hidden=[4]", "model.embedding=2", "model.layers=1", "dataset.input_shape=[8]"]


def test_a_federation_of_the_character_lstm_runs_on_a_users_text(corpus_file: Path, tmp_path: Path) -> None:
    """dataset=text with the user's own column names, every curvature-using step through nn.LSTM."""
    args = [*LSTM, "dataset=text", f"dataset.path={corpus_file}", "dataset.client_columns=[play,role]"]
    args += ["dataset.min_chars=60", "num_clients=6", "fraction=0.5", "num_rounds=2", "local_steps=2"]
    args += ["batch_size=4", "backend=inprocess", "stability.every=1"]
    summary = federate(args, tmp_path / "run")
    final = summary["final"]
    assert all(math.isfinite(v) for v in final.values())
    assert 0 <= final["eval/personalized_acc"] <= 1
    assert summary["rounds"][0]["stability/alpha_lambda_max"] > 0


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (
            ["dataset=shakespeare", "dataset.path=x"],
            "model=net: dataset=shakespeare is text (character ids); use model=lstm",
        ),
        (["model=lstm"], "model=lstm: reads character ids; dataset=digits is not text"),
        (["model=lstm", "dataset=shakespeare", "partition=iid"], "dataset=shakespeare is one client per row by nature"),
    ],
)
def test_models_and_data_that_do_not_fit_are_refused(overrides: list[str], fragment: str) -> None:
    from perfedavg.config import ConfigError
    from perfedavg.run.runner import compose, prepare

    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        prepare(compose(overrides))


# -- statistics (perfedavg.data.text_stats, python -m perfedavg.analysis.data_stats) ----------------------------------


def test_the_statistics_count_clients_windows_and_characters_as_the_runs_cut_them(corpus_file: Path) -> None:
    """Counted independently of the module: 8 rows, those with ≥ 60 characters eligible, each client's windows as
    :func:`load_client` gives them, and the character shares over the eligible clients' text only."""
    import statistics
    from collections import Counter

    from perfedavg.data import text_stats

    texts = [LINE * 3, LINE[:70] + "é—$", "Hi.", *(LINE[i:] * 2 for i in range(5))]
    kept = [t for t in texts if len(t) >= 60]
    for val_fraction in (0.0, 0.25):
        p = params(corpus_file, val_fraction=val_fraction)
        stats = text_stats.statistics(p, top=3)
        assert (stats.rows, stats.eligible, stats.characters) == (8, len(kept), sum(map(len, kept)))
        clients = [load_client(p, i, len(kept), 0) for i in range(len(kept))]
        parts = {"train": [len(c.y_train) for c in clients], "test": [len(c.y_test) for c in clients]}
        if val_fraction:
            parts["val"] = [len(c.y_val) for c in clients]
        assert sorted(stats.windows) == sorted(parts)
        for part, counts in parts.items():
            expected = text_stats.Spread(sum(counts), statistics.median(counts), min(counts), max(counts))
            assert stats.windows[part] == expected, part
    joined = "".join(kept)
    unknown = sum(c not in text_data.VOCABULARY for c in joined)
    assert unknown == 3  # OPHELIA's "é", "—" and "$"
    assert stats.unknown_share == pytest.approx(unknown / len(joined))
    ranked = Counter(c for c in joined if c in text_data.VOCABULARY).most_common(3)
    named = [{" ": "space", "\n": "newline"}.get(c, c) for c, _ in ranked]
    assert stats.commonest == [(name, pytest.approx(n / len(joined))) for name, (_, n) in zip(named, ranked)]
    assert stats.commonest[0][0] == "space"


def test_the_statistics_command_prints_them_and_refuses_an_image_set(corpus_file: Path, tmp_path: Path, capsys) -> None:
    from perfedavg.analysis import data_stats

    out = tmp_path / "stats.md"
    assert (
        data_stats.main(
            [
                "dataset=shakespeare",
                f"dataset.path={corpus_file}",
                "dataset.min_chars=90",
                "dataset.input_shape=[8]",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "eligible clients (at least dataset.min_chars = 90 characters)" in printed and "| space |" in printed
    assert out.read_text().startswith("<!-- written by:") and printed in out.read_text()
    with pytest.raises(SystemExit) as stop:
        data_stats.main(["dataset=mnist"])
    assert stop.value.code == 2
    assert "dataset=mnist: not a text data set" in capsys.readouterr().err
