"""Reading a column of a Hugging Face ``datasets.Dataset`` in one bulk read (the partitioners' shared helper)."""

from __future__ import annotations

from typing import Any

import numpy as np


def column_array(dataset: Any, column: str) -> np.ndarray:
    """One column of a ``datasets.Dataset`` (with or without an indices mapping) as a NumPy array, in one bulk read
    (``dataset[column]`` iterates row by row in ``datasets`` 4)."""
    return dataset.select_columns([column]).to_pandas()[column].to_numpy()
