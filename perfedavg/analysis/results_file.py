"""Reports, tuning summaries and benchmarks that write a Markdown result say where it came from.

``with recording(path):`` copies everything printed to ``path`` as well, under a comment naming the command line,
the code's commit (with ``+changes`` if the working tree differed from it; the installed version outside a
checkout), the time and the machine.
"""

from __future__ import annotations

import contextlib
import io
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from perfedavg import host


def code_version() -> str:
    """The commit of the checkout perfedavg is imported from (``+changes`` when its tracked files differ), or the
    installed version (``perfedavg 0.1.0``) when it is not a git checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        if commit.returncode == 0 and (root / "perfedavg" / "analysis").is_dir():
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
            )
            return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"perfedavg {version('perfedavg')} (installed)"
    except PackageNotFoundError:
        return "unknown"


def provenance() -> str:
    rev = code_version()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    machine = f"{platform.machine()}, {host.label(host.describe())}"  # the CPU model and kernels, as runs record them
    return f"<!-- written by: {command}\n     commit {rev}, {when}, {machine} -->\n"


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


@contextlib.contextmanager
def recording(path: str | None) -> Iterator[None]:
    """Print as usual and, if ``path`` is given, also into that file (after the provenance comment)."""
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    header = provenance()  # before the file is truncated: rewriting a committed result is not a change of the code
    with open(path, "w") as f:
        f.write(header)
        original = sys.stdout
        sys.stdout = _Tee(original, f)  # type: ignore[assignment]
        try:
            yield
        finally:
            sys.stdout = original
