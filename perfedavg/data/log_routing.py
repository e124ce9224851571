"""One console line per log record: libraries that attach their own console handler (Hugging Face's ``datasets`` and
``huggingface_hub``) would print each warning twice under Hydra, once through their handler and once through
Hydra's root handler (which also writes the job's log file)."""

from __future__ import annotations

import logging
import sys

#: Loggers of libraries that add a stderr handler to their own root logger when imported.
SELF_HANDLING = ("datasets", "huggingface_hub")


def route_library_logs(names: tuple[str, ...] = SELF_HANDLING) -> None:
    """When the root logger has handlers (Hydra configured logging), remove the console handlers these libraries
    attached to their loggers, so that their records reach the console once, in Hydra's format and in the job's log
    file. Without root handlers (a plain script, a Ray worker) nothing changes: theirs are then the only ones."""
    if not logging.getLogger().handlers:
        return
    for name in names:
        logger = logging.getLogger(name)
        if not logger.propagate:
            continue
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if type(handler) is logging.StreamHandler and stream in (sys.stderr, sys.stdout):
                logger.removeHandler(handler)
