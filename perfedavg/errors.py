"""The one base class of every mistake a user can make (a config value, a data set, a resume, a plugin).

The command line (:mod:`perfedavg.cli.main`), ``perfedavg-flwr-run`` and the Flower ServerApp print a :class:`UserError`
as one line and exit with :data:`USER_ERROR_EXIT` (2), with no traceback; anything else is a bug or a failed run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

#: The exit code of a refused command (a user's mistake), as argparse and Hydra use it.
USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake the user can fix: the message names the key or file, the value and what is allowed."""


@contextlib.contextmanager
def exit_on_user_error(prog: str = "perfedavg") -> Iterator[None]:
    """Turn a :class:`UserError` raised inside into one line on stderr (``perfedavg: error: …``) and exit code
    :data:`USER_ERROR_EXIT`: the one place a user's mistake becomes an exit status."""
    try:
        yield
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
