"""Small image data sets in the on-disk formats the hub loaders read (parquet shards, image folders).

Each image is a class-dependent pattern plus noise, so a model can learn the labels; sizes are tiny for speed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


def images(
    num_per_class: int, shape: tuple[int, ...], num_classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``[N, *shape]`` (``shape`` is (H, W) or (H, W, 3)) and int labels ``[N]``, classes interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(num_classes), num_per_class)
    base = rng.integers(0, 256, size=(num_classes, *shape))
    noise = rng.integers(-30, 31, size=(len(labels), *shape))
    return np.clip(base[labels] + noise, 0, 255).astype(np.uint8), labels


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(root: Path, x: np.ndarray, y: np.ndarray, image_key: str = "image") -> Path:
    """``root/train-00000-of-00001.parquet`` in the hub's layout: an image struct {bytes, path} and an int label."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    column = pa.array(
        [{"bytes": _png(img), "path": None} for img in x],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    table = pa.table({image_key: column, "label": pa.array(y, type=pa.int64())})
    features = '{"info": {"features": {"%s": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"}}}}'
    table = table.replace_schema_metadata({"huggingface": features % image_key})
    pq.write_table(table, root / "train-00000-of-00001.parquet")
    return root


def write_image_folder(root: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """``root/train/<label>/<i>.png``: the layout ``datasets``' imagefolder builder reads (labels from folders)."""
    for i, (img, label) in enumerate(zip(x, y)):
        folder = root / "train" / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.png").write_bytes(_png(img))
    return root
