"""What a text data set gives a federation: rows, eligible clients, windows per part, the commonest characters.

    python -m perfedavg.analysis.data_stats dataset=shakespeare dataset.path=/path/to/roles.parquet
    python -m perfedavg.analysis.data_stats dataset=text dataset.path=chats.parquet dataset.client_columns=[user] \
        dataset.text_column=message --out stats.md

The overrides are a run's (``experiment=shakespeare`` works too): the same keys choose the same clients and windows
(:mod:`perfedavg.data.text_stats`). ``--out`` also writes the output to a file, under a comment naming the command,
commit, time and machine (scripts/results/shakespeare_data.md is made so).
"""

from __future__ import annotations

import argparse
import sys

from perfedavg.analysis.results_file import recording
from perfedavg.config.preparation import check_composes
from perfedavg.config.schema import to_container
from perfedavg.data import text_stats
from perfedavg.errors import UserError, exit_on_user_error

TOOL = "data-stats"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m perfedavg.analysis.{TOOL.replace('-', '_')}")
    parser.add_argument("overrides", nargs="+", help="a run's overrides: dataset=shakespeare dataset.path=…")
    parser.add_argument("--out", help="also write the output here (Markdown)")
    parser.add_argument("--top", type=int, default=5, help="how many of the commonest characters to list")
    args = parser.parse_args(argv)
    with exit_on_user_error(TOOL):
        dataset = to_container(check_composes(args.overrides))["dataset"]
        if not dataset.get("text_column"):
            raise UserError(
                f"dataset={dataset['name']}: not a text data set; the statistics are for dataset=shakespeare or "
                "dataset=text"
            )
        stats = text_stats.statistics(dataset, top=args.top)
        with recording(args.out):
            print(text_stats.markdown(stats, dataset["name"]), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
