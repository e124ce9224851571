"""``python -m perfedavg.algorithms``: what the declarations say, for shell tools (scripts/tune.sh,
scripts/reproduce.sh) that must not list methods themselves.

  python -m perfedavg.algorithms methods              every method, one a line (fo, hvp, …, fedavg, pfedme, …)
  python -m perfedavg.algorithms overrides METHOD     the overrides that choose it (algorithm=…, hessian=…)
  python -m perfedavg.algorithms search METHOD        its tuning search space as Optuna sweeper overrides, one a line
  python -m perfedavg.algorithms tuned-keys METHOD    the keys its search space tunes (alpha, beta, algorithm.lam, …)
  python -m perfedavg.algorithms reads ALGORITHM      the algorithm-dependent shared keys it reads (alpha, …)

An unknown method exits 2 with one line naming the allowed ones.
"""

from __future__ import annotations

import sys

from perfedavg import algorithms
from perfedavg.errors import USER_ERROR_EXIT


def main(argv: list[str]) -> int:
    table = algorithms.methods()
    if argv == ["methods"]:
        print("\n".join(table))
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
