"""``python -m perfedavg.algorithms``: what the declarations say, on the command line (the analysis commands read
the same declarations in-process).

  python -m perfedavg.algorithms methods              every method, one a line (fo, hvp, …, fedavg, pfedme, …)
  python -m perfedavg.algorithms overrides METHOD     the overrides that choose it (algorithm=…, hessian=…)
  python -m perfedavg.algorithms search METHOD        its tuning search space as Optuna sweeper overrides, one a line
  python -m perfedavg.algorithms tuned-keys METHOD    the keys its search space tunes (alpha, beta, algorithm.lam, …)
  python -m perfedavg.algorithms reads ALGORITHM      the algorithm-dependent shared keys it reads (alpha, …)
  python -m perfedavg.algorithms table                the keys each algorithm reads, as docs/algorithms.md shows them

An unknown method exits 2 with one line naming the allowed ones.
"""

from __future__ import annotations

import sys

from perfedavg import algorithms
from perfedavg.algorithms.declaration import Key
from perfedavg.errors import USER_ERROR_EXIT


def key_table() -> str:
    """Markdown: one row per algorithm (built-in and installed) with what its declaration says: the shared keys it
    reads, its own keys (default, range, meaning), Hessian use, per-client state and its tuning search space."""
    rows = [
        "| `algorithm=` | title | reads | its own keys (default; range) | `hessian` | state per client | tuned |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in algorithms.declarations().items():
        shared = ", ".join(f"`{k}`" for k in sorted(algorithms.reads(name)))
        own = "; ".join(f"`algorithm.{k.name}` {k.default} ({_range(k)}): {k.help}" for k in d.keys) or "–"
        tuned = ", ".join(f"`{k}` {s.describe()}" for k, s in d.search_space().items())
        hessian, state = ("yes" if d.uses_hessian else "–"), ("yes" if d.stateful else "–")
        rows.append(f"| `{name}` | {d.title} | {shared} | {own} | {hessian} | {state} | {tuned} |")
    return "\n".join(rows)


def _range(key: Key) -> str:
    kind = "integer" if key.integer else "number"
    if key.minimum is None:
        return f"any {kind}"
    return f"{kind} {'>' if key.strict else '≥'} {key.minimum:g}"


def main(argv: list[str]) -> int:
    table = algorithms.methods()
    if argv == ["methods"]:
        print("\n".join(table))
        return 0
    if argv == ["table"]:
        print(key_table())
        return 0
    if len(argv) != 2 or argv[0] not in ("overrides", "search", "tuned-keys", "reads"):
        print(__doc__, file=sys.stderr)
        return USER_ERROR_EXIT
    verb, method = argv
    if verb == "reads":
        names = algorithms.declarations()
        if method not in names:
            print(f"perfedavg: error: unknown algorithm {method!r}; allowed: {' '.join(names)}", file=sys.stderr)
            return USER_ERROR_EXIT
        print(" ".join(sorted(algorithms.reads(method))))
        return 0
    if method not in table:
        print(f"perfedavg: error: unknown method {method!r}; allowed: {' '.join(table)}", file=sys.stderr)
        return USER_ERROR_EXIT
    space = table[method][1].search_space()
    if verb == "overrides":
        print(" ".join(algorithms.method_overrides(method)))
    elif verb == "search":
        print("\n".join(f"{key}={search.sweep()}" for key, search in space.items()))
    else:
        print(" ".join(space))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
