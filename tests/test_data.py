"""Per-client data: partition schemes, the image loaders on local files, FedProx's synthetic set, digits, regression.

Nothing is downloaded: the hub loaders read parquet files and image folders that the tests write (same code path
as a hub data set: ``FederatedDataset`` → ``datasets.load_dataset``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_images import images, write_image_folder, write_parquet

from perfedavg.data import DataError, check_dataset, load_clients
from perfedavg.data.digits import load_digits_arrays
from perfedavg.data.partition import partition_indices
from perfedavg.data.synthetic import synthetic_user

PATHOLOGICAL = {"name": "pathological", "classes_per_client": 2}
DIGITS = {"name": "digits", "test_fraction": 0.2, "partition": PATHOLOGICAL}
REGRESSION = {
    "name": "regression",
    "samples_per_client": 40,
    "heterogeneity": 1.0,
    "noise": 0.1,
    "test_fraction": 0.25,
    "partition": {"name": "natural"},
}
SYNTHETIC = {
    "name": "synthetic",
    "synthetic_alpha": 0.5,
    "synthetic_beta": 0.5,
    "input_shape": [60],
    "num_classes": 10,
    "test_fraction": 0.2,
    "partition": {"name": "natural"},
}
#: A small labelled pool: 10 classes × 100 examples, classes interleaved.
LABELS = np.tile(np.arange(10), 100)


def label_counts(parts: list[np.ndarray], labels: np.ndarray = LABELS) -> list[Counter]:
    return [Counter(int(v) for v in labels[p]) for p in parts]


def assert_disjoint(parts: list[np.ndarray]) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist()))


# --- partition schemes: label structure on a small synthetic pool -------------------------------------------------


def test_iid_partition_is_an_even_disjoint_cover_with_every_label() -> None:
    parts = partition_indices(LABELS, {"name": "iid"}, 8, seed=0)
    assert_disjoint(parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(LABELS)))
    assert {len(p) for p in parts} <= {len(LABELS) // 8, len(LABELS) // 8 + 1}
    assert all(len(c) == 10 for c in label_counts(parts))  # 125 random examples: every class shows up


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_partition_gives_each_client_exactly_k_labels(k: int) -> None:
    parts = partition_indices(LABELS, {"name": "pathological", "classes_per_client": k}, 12, seed=0)
    assert_disjoint(parts)
    assert [len(c) for c in label_counts(parts)] == [k] * 12
    used = set().union(*label_counts(parts))
    assert used == set(range(10))  # first class dealt deterministically: 12 clients cover all 10 classes


def test_dirichlet_partition_is_skewed_and_respects_the_minimum_size() -> None:
    spec = {"name": "dirichlet", "alpha": 0.1, "min_partition_size": 20}
    parts = partition_indices(LABELS, spec, 8, seed=0)
    assert_disjoint(parts)
    assert sorted(np.concatenate(parts).tolist()) == list(range(len(LABELS)))
    assert min(len(p) for p in parts) >= 20
    top_share = np.mean([max(c.values()) / sum(c.values()) for c in label_counts(parts)])
    iid_share = np.mean(
        [max(c.values()) / sum(c.values()) for c in label_counts(partition_indices(LABELS, {"name": "iid"}, 8, 0))]
    )
    assert top_share > 2 * iid_share  # α = 0.1: most of a client's examples come from one or two classes


def test_dirichlet_partition_equals_flowers_wherever_flower_reaches_the_minimum() -> None:
    """Same draws as flwr_datasets' DirichletPartitioner, redraws included, so results made before are unchanged:
    12 settings where Flower reaches the minimum, several of them only after redrawing."""
    import warnings

    import datasets
    from flwr_datasets.partitioner import DirichletPartitioner

    from perfedavg.data.partition import make_partitioner

    labels = np.random.default_rng(3).integers(0, 10, 2_000)
    redrawn = 0
    for alpha, min_size in [(0.5, 10), (0.3, 20), (0.1, 5)]:
        for seed in range(4):
            table = datasets.Dataset.from_dict({"label": labels})
            theirs = DirichletPartitioner(20, "label", alpha, min_size, self_balancing=False, seed=seed)
            theirs.dataset = table
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")  # Flower warns at each redraw
                expected = [theirs.load_partition(i)["label"] for i in range(20)]
            redrawn += any("min_partition_size" in str(w.message) for w in caught)
            ours = make_partitioner({"name": "dirichlet", "alpha": alpha, "min_partition_size": min_size}, 20, seed)
            ours.dataset = table
            assert [ours.load_partition(i)["label"] for i in range(20)] == expected, (alpha, min_size, seed)
            assert ours.topped_up == 0
    assert redrawn >= 3  # the redraw path itself is compared, not only first draws


@pytest.mark.parametrize("rule", ["redraw", "top_up"])
def test_dirichlet_partition_gives_a_thousand_clients_their_minimum(rule: str) -> None:
    """1,000 clients of a 60,000-example pool at α = 0.1, minimum 10: Flower's rule refuses; the top-up gives every
    client its 10, moves exactly what the short clients of the last draw lacked, and keeps the partition a disjoint
    cover."""
    import datasets

    from perfedavg.data.partition import make_partitioner

    labels = np.random.default_rng(0).integers(0, 10, 60_000)
    spec = {"name": "dirichlet", "alpha": 0.1, "min_partition_size": 10, "min_size_rule": rule}
    partitioner = make_partitioner(spec, 1_000, seed=0)
    partitioner.dataset = datasets.Dataset.from_dict({"label": labels})
    partitioner.load_partition(0)  # computes the whole split
    parts = [np.asarray(partitioner._partition_id_to_indices[i]) for i in range(1_000)]
    assert min(len(p) for p in parts) >= 10
    assert sorted(np.concatenate(parts).tolist()) == list(range(60_000))
    replay = make_partitioner(spec, 1_000, seed=0)  # the same generator: its draws are the ones made above
    for _ in range(1 if rule == "top_up" else 11):
        last = replay._draw(labels, list(range(10)))
    lacking = sum(max(0, 10 - len(p)) for p in last)
    assert lacking > 0 and partitioner.topped_up == lacking
    skew = np.mean([max(c.values()) / sum(c.values()) for c in label_counts(parts, labels)])
    assert skew > 0.5  # α = 0.1 over 10 classes: still a skewed mix after the top-up (IID would give ≈ 0.2)
    if rule == "redraw":  # the claim above: Flower's own partitioner gives up on this split
        import warnings

        from flwr_datasets.partitioner import DirichletPartitioner

        theirs = DirichletPartitioner(1_000, "label", 0.1, 10, self_balancing=False, seed=0)
        theirs.dataset = partitioner.dataset
        with warnings.catch_warnings(), pytest.raises(ValueError, match="max number of attempts"):
            warnings.simplefilter("ignore")
            theirs.load_partition(0)


def test_dirichlet_partition_names_a_minimum_the_data_cannot_give() -> None:
    spec = {"name": "dirichlet", "alpha": 0.5, "min_partition_size": 200, "min_size_rule": "top_up"}
    with pytest.raises(ValueError, match="1000 examples cannot give 8 clients partition.min_partition_size=200 each"):
        partition_indices(LABELS, spec, 8, seed=0)


def test_shard_partition_gives_each_client_its_shards_of_the_label_sorted_data() -> None:
    parts = partition_indices(LABELS, {"name": "shard", "shards_per_client": 2}, 10, seed=0)
    assert_disjoint(parts)
    assert [len(p) for p in parts] == [100] * 10  # 1,000 examples in 20 shards of 50, two per client
    for counts in label_counts(parts):  # a shard is 50 examples of one label (100 per label): ≤ 2 labels per client
        assert len(counts) <= 2 and all(n % 50 == 0 for n in counts.values())


def test_paper_partition_has_the_papers_label_structure() -> None:
    a, n = 8, 10
    parts = partition_indices(LABELS, {"name": "paper", "images_per_class": a}, n, seed=0)
    assert_disjoint(parts)
    counts = label_counts(parts)
    for c in counts[: n // 2]:  # group A: a images of each of classes 0–4
        assert c == Counter({0: a, 1: a, 2: a, 3: a, 4: a})
    lower_used = []
    for c in counts[n // 2 :]:  # group B: a/2 of one class in 0–4 and 2a of one class in 5–9
        (low, n_low), (high, n_high) = sorted(c.items())
        assert low < 5 <= high and (n_low, n_high) == (a // 2, 2 * a)
        lower_used.append(low)
    assert sorted(lower_used) == [0, 1, 2, 3, 4]  # 5 group-B clients: each lower class dealt once


def test_paper_partition_too_large_for_the_data_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"partition=paper .* needs \d+ examples of class \d; the data has \d+"):
        check_dataset({**DIGITS, "partition": {"name": "paper", "images_per_class": 100}}, 20, seed=0)


EVERY_SCHEME = [
    {"name": "iid"},
    {"name": "shard", "shards_per_client": 2},
    PATHOLOGICAL,
    {"name": "dirichlet", "alpha": 0.5, "min_partition_size": 10},
    {"name": "paper", "images_per_class": 6},
]


@pytest.mark.parametrize("spec", EVERY_SCHEME, ids=[s["name"] for s in EVERY_SCHEME])
@pytest.mark.parametrize("sort", [True, False], ids=["sorted", "load-order"])
def test_bulk_partitions_equal_one_load_partition_per_client(spec: dict, sort: bool, monkeypatch) -> None:
    """The bulk read of every partition (one column read) gives exactly what one load_partition per client gives."""
    from perfedavg.data import partition

    labels = np.random.default_rng(1).permutation(LABELS)
    bulk = partition_indices(labels, spec, 10, seed=2, sort=sort)
    monkeypatch.setattr(partition, "_bulk_partitions", lambda *a: None)
    one_by_one = partition_indices(labels, spec, 10, seed=2, sort=sort)
    assert len(bulk) == len(one_by_one) == 10
    assert all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(bulk, one_by_one, strict=True))


@pytest.mark.parametrize("spec", EVERY_SCHEME, ids=[s["name"] for s in EVERY_SCHEME])
def test_every_partition_is_deterministic_in_the_seed(spec: dict) -> None:
    a, b, c = (partition_indices(LABELS, spec, 10, seed=s) for s in (1, 1, 2))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert any(not np.array_equal(p, q) for p, q in zip(a, c))


# --- image data sets from local files (the hub loader's code path) ----------------------------------------------

HUB_CASES = [
    ("mnist", "parquet", (28, 28), [1, 28, 28], "image"),
    ("fashion_mnist", "image folder", (28, 28), [1, 28, 28], "image"),
    ("cifar10", "parquet", (32, 32, 3), [3, 32, 32], "img"),
]


@pytest.mark.parametrize(("name", "layout", "shape", "input_shape", "key"), HUB_CASES)
def test_image_data_sets_load_from_local_files(tmp_path: Path, name, layout, shape, input_shape, key) -> None:
    x, y = images(12, shape)
    if layout == "parquet":
        root = write_parquet(tmp_path / "data", x, y, image_key=key)
    else:
        root = write_image_folder(tmp_path / "data", x, y)
    params = {
        "name": name,
        "path": str(root),
        "cache_dir": str(tmp_path / "cache"),
        "input_shape": input_shape,
        "test_fraction": 0.25,
        "partition": {"name": "pathological", "classes_per_client": 2},
    }
    clients = load_clients(params, 5, seed=0)
    used = set().union(*(set(c.train_labels()) | set(c.y_test.tolist()) for c in clients))
    assert sum(c.num_train + c.num_test for c in clients) == 12 * len(used)  # every image of a used class, once
    originals = {tuple(np.asarray(img, dtype=np.float32).flatten() / 255.0): int(lbl) for img, lbl in zip(x, y)}
    for c in clients:
        assert list(c.x_train.shape[1:]) == input_shape and c.x_train.dtype == torch.float32
        assert len(set(c.train_labels()) | set(c.y_test.tolist())) == 2
        for image, label in zip(c.x_train, c.y_train):  # pixels and labels survive the round trip exactly
            hwc = image.permute(1, 2, 0) if input_shape[0] == 3 else image[0]
            assert originals[tuple(hwc.flatten().tolist())] == int(label)
    again = load_clients(params, 5, seed=0)
    assert all(torch.equal(p.x_train, q.x_train) for p, q in zip(clients, again))


def test_paper_partition_on_a_local_mnist(tmp_path: Path) -> None:
    x, y = images(40, (28, 28))
    params = {
        "name": "mnist",
        "path": str(write_parquet(tmp_path / "data", x, y)),
        "cache_dir": str(tmp_path / "cache"),
        "input_shape": [1, 28, 28],
        "test_fraction": 0.2,
        "partition": {"name": "paper", "images_per_class": 6},
    }
    clients = load_clients(params, 6, seed=0)
    held = [Counter(c.train_labels() + c.y_test.tolist()) for c in clients]
    assert [sum(Counter(c.y_train.tolist() + c.y_test.tolist()).values()) for c in clients] == [30] * 3 + [15] * 3
    assert all(set(h) == {0, 1, 2, 3, 4} for h in held[:3])


def test_missing_hub_data_set_is_a_clear_error_offline(tmp_path: Path) -> None:
    params = {
        "name": "cifar10",
        "cache_dir": str(tmp_path / "empty-cache"),
        "input_shape": [3, 32, 32],
        "test_fraction": 0.2,
        "partition": {"name": "iid"},
    }
    with pytest.raises(
        DataError, match=r"dataset=cifar10: cannot load 'uoft-cs/cifar10'.*perfedavg\.data\.fetch cifar10"
    ):
        check_dataset(params, 5, seed=0)


def test_unreadable_local_path_and_wrong_shape_are_clear_errors(tmp_path: Path) -> None:
    base = {"name": "mnist", "cache_dir": str(tmp_path / "c"), "test_fraction": 0.2, "partition": {"name": "iid"}}
    with pytest.raises(DataError, match=r"dataset.path=.*missing.* must be a directory"):
        check_dataset({**base, "path": str(tmp_path / "missing"), "input_shape": [1, 28, 28]}, 2, seed=0)
    x, y = images(3, (32, 32, 3))
    root = write_parquet(tmp_path / "rgb", x, y)
    shape_error = (
        r"dataset=mnist: dataset\.path=.*rgb \(train-00000-of-00001\.parquet\): column 'image', row 0: image of shape "
        r"\[1, 32, 32\], dataset.input_shape is \[1, 28, 28\]"
    )
    with pytest.raises(DataError, match=shape_error):
        check_dataset({**base, "path": str(root), "input_shape": [1, 28, 28]}, 2, seed=0)


# --- FedProx's Synthetic(α, β) -----------------------------------------------------------------------------------


def test_synthetic_users_follow_fedprox_and_are_deterministic() -> None:
    x, y = synthetic_user(3, seed=0, alpha=0.5, beta=0.5)
    x2, y2 = synthetic_user(3, seed=0, alpha=0.5, beta=0.5)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape[1] == 60 and x.dtype == np.float32 and set(y.tolist()) <= set(range(10))
    sizes = [len(synthetic_user(k, seed=0, alpha=0.5, beta=0.5)[1]) for k in range(200)]
    assert min(sizes) >= 50
    assert 80 < np.median(sizes) < 140  # ⌊LogNormal(4, 2)⌋ + 50 has median e⁴ + 50 ≈ 105
    # x − v_k ~ N(0, diag(j^-1.2)): pooled over users (each centred on its own mean), feature j's std is j^-0.6.
    centred = np.concatenate(
        [x - x.mean(axis=0) for x, _ in (synthetic_user(k, seed=1, alpha=0.5, beta=0.5) for k in range(40))]
    )
    expected = np.arange(1, 61) ** -0.6
    assert np.allclose(centred.std(axis=0), expected, rtol=0.1), centred.std(axis=0) / expected


def test_synthetic_beta_spreads_the_users_input_means() -> None:
    # v_k ~ N(B_k, 1) per feature with B_k ~ N(0, β): a user's mean feature value ≈ B_k, so across users its spread
    # is ≈ sqrt(β² + 1/60) (≈ 0.13 at β = 0, ≈ 1 at β = 1).
    def spread(beta: float) -> float:
        return float(np.std([synthetic_user(k, seed=0, alpha=0.5, beta=beta)[0].mean() for k in range(60)]))

    assert spread(0.0) < 0.3 < 0.6 < spread(1.0)


def test_generated_data_sets_refuse_a_partitioner() -> None:
    with pytest.raises(DataError, match=r"partition=iid: dataset=synthetic is generated per client"):
        check_dataset({**SYNTHETIC, "partition": {"name": "iid"}}, 3, seed=0)
    with pytest.raises(DataError, match=r"partition=natural: dataset=digits is split across clients"):
        check_dataset({**DIGITS, "partition": {"name": "natural"}}, 3, seed=0)


# --- digits and regression ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3])
def test_digits_clients_hold_exactly_k_labels_and_disjoint_examples(k: int) -> None:
    clients = load_clients({**DIGITS, "partition": {"name": "pathological", "classes_per_client": k}}, 20, seed=0)
    x_all, _ = load_digits_arrays()
    seen = set()
    for c in clients:
        labels = sorted(set(c.train_labels()) | {int(v) for v in torch.unique(c.y_test)})
        assert len(labels) == k, (c.client_id, labels)
        assert c.num_train >= 1 and c.num_test >= 1
        rows = {tuple(r.flatten().tolist()) for r in torch.cat([c.x_train, c.x_test])}
        assert not rows & seen  # no image is given to two clients (digits has no exact duplicate images)
        seen |= rows
    assert len(seen) <= len(x_all)


def test_digits_split_is_deterministic_in_the_seed() -> None:
    a, b, c = (load_clients(DIGITS, 10, seed=s) for s in (3, 3, 4))
    assert all(torch.equal(p.x_train, q.x_train) and torch.equal(p.y_test, q.y_test) for p, q in zip(a, b))
    assert any(not torch.equal(p.y_train, q.y_train) for p, q in zip(a, c))


def test_too_many_digits_clients_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"num_clients=500: .* client\(s\) get fewer than 10 examples"):
        check_dataset(DIGITS, 500, seed=0)


def test_regression_tasks_are_deterministic_and_differ_between_clients() -> None:
    a, b = load_clients(REGRESSION, 3, seed=1), load_clients(REGRESSION, 3, seed=1)
    for p, q in zip(a, b):
        assert torch.equal(p.x_train, q.x_train) and torch.equal(p.y_test, q.y_test)
        assert p.x_train.shape == (30, 3) and p.y_train.shape == (30, 5) and p.num_test == 10

    def fitted_map(c):  # least-squares [x, 1] → y on the client's training data
        design = torch.cat([c.x_train, torch.ones(c.num_train, 1)], dim=1)
        return torch.linalg.lstsq(design, c.y_train).solution

    maps = [fitted_map(c) for c in a]
    assert (maps[0] - maps[1]).abs().max() > 0.3  # heterogeneous tasks: personalization has something to do
    same = load_clients({**REGRESSION, "heterogeneity": 0.0}, 2, seed=1)
    assert (fitted_map(same[0]) - fitted_map(same[1])).abs().max() < 0.2  # one shared task, up to noise


def test_unused_classes_are_reported_once_in_our_terms(caplog: pytest.LogCaptureFixture) -> None:
    import warnings

    from perfedavg.data import digits

    digits._parts.cache_clear()  # the partition is cached per process; the warning comes with computing it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Flower's own UserWarning (in its parameter names) must not escape
        with caplog.at_level("WARNING", logger="perfedavg"):
            check_dataset(DIGITS, 3, seed=0)
    held = set().union(*(set(c.train_labels()) for c in load_clients(DIGITS, 3, seed=0)))
    unused = sorted(set(range(10)) - held)
    assert [r.getMessage() for r in caplog.records] == [
        f"partition=pathological with digits: classes {unused} are held by no client (each client gets 2 classes)"
    ]


def test_fetch_reports_an_unreachable_hub_without_a_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    args = [sys.executable, "-m", "perfedavg.data.fetch", "mnist", "--cache-dir", str(tmp_path)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 1
    assert "could not download ylecun/mnist" in out.stderr and "Traceback" not in out.stderr
    wrong = [sys.executable, "-m", "perfedavg.data.fetch", "mnst"]
    bad = subprocess.run(wrong, capture_output=True, text=True, timeout=300, env=env)
    assert bad.returncode == 2 and "invalid choice: 'mnst'" in bad.stderr


def test_an_unreachable_hub_is_reported_within_seconds(tmp_path: Path, silent_and_closed_ports) -> None:
    """Offline without HF_HUB_OFFLINE=1, huggingface_hub retried for ~30 s with 11 warnings. Now one HEAD request
    (≤ 3 s) decides: a closed loopback port and a listener that never answers both give the one-line error at once,
    and so does the download command. HF_ENDPOINT is loopback, so nothing here leaves the machine. (One process for
    all cases: the endpoint is read at import, so the script switches it through huggingface_hub's constants.)"""
    import os
    import subprocess
    import sys

    script = """
import os, sys, time
from huggingface_hub import constants
from perfedavg.data import fetch, hub
params = {'name': 'mnist', 'path': None, 'cache_dir': None, 'image_key': 'image', 'label_key': 'label',
          'input_shape': [1, 28, 28]}
for port in sys.argv[1:]:
    constants.ENDPOINT = f'http://127.0.0.1:{port}'
    hub.forget_loaded()
    started = time.monotonic()
    try:
        hub.decoded_split(params)
    except hub.DataUnavailableError as e:
        print(f'{time.monotonic() - started:.2f}', e, flush=True)
    started = time.monotonic()
    code = fetch.main(['mnist', '--cache-dir', os.environ['HF_HOME']])
    print(f'{time.monotonic() - started:.2f} fetch exit {code}', flush=True)
"""
    ports = list(silent_and_closed_ports)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env = {k: v for k, v in env.items() if not k.lower().endswith("_proxy")}  # loopback only, never via a proxy
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{ports[1]}", HF_HOME=str(tmp_path / "hf"), NO_PROXY="*", no_proxy="*")
    env["PERFEDAVG_CACHE_DIR"] = str(tmp_path / "cache")
    args = [sys.executable, "-c", script, *map(str, ports)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4, out.stdout
    for (port, reason), (load, download) in zip(
        ((ports[0], "no answer within 3 s"), (ports[1], "Connection refused")), (lines[0:2], lines[2:4]), strict=True
    ):
        seconds, message = load.split(" ", 1)
        # the probe waits 3 s; the slack is for a loaded machine (5.3 s seen); the retries it replaced took ~30 s
        assert float(seconds) < 10 and float(download.split()[0]) < 10
        assert f"the Hugging Face hub (http://127.0.0.1:{port}) cannot be reached ({reason}" in message
        assert "is not in the local cache" in message and "perfedavg.data.fetch mnist" in message
        assert download.endswith("fetch exit 1")
    assert "Retrying" not in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("could not download ylecun/mnist: the Hugging Face hub") == 2


def test_a_hub_that_answers_with_any_status_counts_as_reachable(monkeypatch) -> None:
    """The probe asks only whether something speaks HTTP there: a 404 (a hub without that path) is an answer."""
    import http.server
    import os
    import threading

    for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)  # loopback only, never via a proxy
    monkeypatch.setenv("NO_PROXY", "*")

    from perfedavg.data.hub_reach import answer_problem

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 - the handler's name is http.server's
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert answer_problem(f"http://127.0.0.1:{server.server_port}") is None
    finally:
        server.shutdown()
        server.server_close()
