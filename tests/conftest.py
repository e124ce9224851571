"""Test-wide settings: no test may reach the Hugging Face hub, and none writes into the user's cache."""

from __future__ import annotations

import os
import tempfile

# Read by huggingface_hub / datasets at import time, so set before any test module imports them.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="perfedavg-hf-"))
# Decoded image arrays and partitions (perfedavg.data.array_cache) go to a temporary cache, not the user's.
os.environ.setdefault("PERFEDAVG_CACHE_DIR", tempfile.mkdtemp(prefix="perfedavg-cache-"))
