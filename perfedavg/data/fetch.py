"""Download a hub data set into the Hugging Face cache so that later runs work offline.

    python -m perfedavg.data.fetch mnist [--cache-dir DIR]

Runs ``datasets.load_dataset`` on the data set's hub id (see :data:`perfedavg.data.hub.SOURCES`); afterwards
``perfedavg dataset=mnist`` reads the cache, also with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import argparse
import sys

from perfedavg.data import hub_reach
from perfedavg.data.hub import SOURCES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perfedavg.data.fetch", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(SOURCES), help="data set to download")
    parser.add_argument("--cache-dir", default=None, help="cache directory (default: the Hugging Face cache)")
    args = parser.parse_args(argv)
    import datasets

    source = SOURCES[args.name]
    problem = hub_reach.unreachable()  # ≤ 3 s instead of ~30 s of retries
    if problem:
        print(
            f"perfedavg: error: could not download {source.hub_id}: the Hugging Face hub ({hub_reach.endpoint()}) "
            f"cannot be reached ({problem})",
            file=sys.stderr,
        )
        return 1
    print(f"downloading {source.hub_id} …", flush=True)
    try:
        loaded = datasets.load_dataset(source.hub_id, cache_dir=args.cache_dir)
    except Exception as e:  # network or hub errors: report, no traceback
        print(f"perfedavg: error: could not download {source.hub_id}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    sizes = ", ".join(f"{split}: {len(rows):,}" for split, rows in loaded.items())
    print(f"{args.name} is cached ({sizes}); runs with dataset={args.name} now work offline")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
