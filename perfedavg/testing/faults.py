"""Inject a fault into one client of a perfedavg run: a client that hangs, a worker process that dies, a client that
raises. Used by ``tests/test_stopping.py`` and ``scripts/bench_faults.py``; also a way to rehearse a fault by hand:

    python -m perfedavg.testing.faults stall:1:2:600 -- num_rounds=5 fraction=1.0 round_timeout_s=10
    python -m perfedavg.testing.faults die:1:2 -- num_rounds=4 fraction=1.0

A fault is ``KIND:CLIENT:ROUND[:SECONDS]``: in round ROUND, client CLIENT's training (not its evaluation) first

- ``stall``: sleeps SECONDS (a hung client: a stuck data loader, a dead network mount);
- ``die``: ends its process at once (``os._exit(1)``: a crash, the kernel's OOM killer);
- ``raise``: raises a RuntimeError (a bug in the client).

The words after ``--`` are the ``perfedavg`` command's; the run goes through that command unchanged (Hydra, the
checks, the exit codes), with the fault wrapped around its ClientApp as a Flower mod. Under Ray the mod reaches the
workers by reference to this module, which they import from the installed package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Message

KINDS = ("stall", "die", "raise")


@dataclass(frozen=True)
class Fault:
    """One fault: ``kind`` (see the module's docstring) at ``client``'s training in ``server_round``."""

    kind: str
    client: int
    server_round: int
    seconds: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """``KIND:CLIENT:ROUND[:SECONDS]`` (SECONDS for ``stall`` only)."""
        parts = spec.split(":")
        if parts[0] not in KINDS or len(parts) != (4 if parts[0] == "stall" else 3):
            raise ValueError(f"{spec}: expected stall:CLIENT:ROUND:SECONDS, die:CLIENT:ROUND or raise:CLIENT:ROUND")
        return cls(parts[0], int(parts[1]), int(parts[2]), float(parts[3]) if parts[0] == "stall" else 0.0)

    def applies(self, message: Message, context: Context) -> bool:
        return (
            message.metadata.message_type == "train"
            and int(context.node_config["partition-id"]) == self.client
            and int(message.content["config"]["round"]) == self.server_round
        )

    def mod(self) -> Callable:
        """A Flower client mod that injects this fault and otherwise passes the message on."""

        def inject(message: Message, context: Context, call_next: Callable) -> Message:
            if self.applies(message, context):
                if self.kind == "stall":
                    time.sleep(self.seconds)
                elif self.kind == "die":
                    os._exit(1)
                else:
                    raise RuntimeError(f"injected fault in client {self.client}, round {self.server_round}")
            return call_next(message, context)

        return inject


def faulty_client_app(*faults: Fault):  # noqa: ANN201 - a Flower ClientApp
    """perfedavg's ClientApp with ``faults`` as mods."""
    from perfedavg.engines.client_app import build_client_app

    return build_client_app(mods=[f.mod() for f in faults])


@dataclass
class Stopped:
    """How a run in ``run_dir`` ended after a stop signal: its exit code and output, the seconds from the signal to its
    exit, the processes of its group still alive a second later, and the last round its checkpoint holds (0: none)."""

    run_dir: Path
    code: int
    output: str
    seconds: float
    left: list[str]
    checkpointed: int

    def problems(self, signum: int) -> list[str]:
        """What keeps this from a clean stop (none: clean): exit 128 + ``signum``, no traceback, no process left, a
        checkpoint of round ≥ 1 that loads, the resume line naming that round, no ``metrics.json``, no lock left."""
        out, found = self.output, []
        if self.code != 128 + signum:
            found.append(f"exit code {self.code}, not {128 + signum}")
        if "Traceback" in out:
            found.append("a traceback")
        if self.left:
            found.append(f"processes left: {self.left}")
        if self.checkpointed < 1:
            found.append("no checkpoint of a completed round")
        line = f"interrupted after round {self.checkpointed}; continue with: perfedavg resume={self.run_dir.resolve()}"
        if line not in out:
            found.append(f"no line {line!r}")
        if (self.run_dir / "metrics.json").exists() or (self.run_dir / ".perfedavg.lock").exists():
            found.append("metrics.json or the run lock written")
        return found + ([f"output: {out[-3000:]}"] if found else [])


def checkpointed_round(run_dir: Path) -> int:
    """The round of the checkpoint in ``run_dir`` (loaded: it is whole), 0 without one."""
    from perfedavg import checkpoint

    return int(checkpoint.load(run_dir)["round"]) if checkpoint.checkpoint_path(run_dir).exists() else 0


def processes_left(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group."""
    out = subprocess.run(["ps", "-ww", "-eo", "pgid=,stat=,args="], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if line.split()[0] == str(pgid) and not line.split()[1].startswith("Z")]


def signal_mid_run(
    overrides: Sequence[str],
    run_dir: Path,
    signum: int,
    after_round: int = 2,
    faults: Sequence[str] = (),
    delay_s: float = 0.0,
) -> Stopped:
    """Start ``perfedavg`` (with ``faults``, specs as in the module's docstring) in a process group of its own, and
    send ``signum`` to the whole group, as a terminal's Ctrl-C or a batch scheduler does, ``delay_s`` after round
    ``after_round`` is checkpointed. Kills the group and raises if the run ends before that or is alive 60 s after."""
    command = [sys.executable, "-m", *(["perfedavg.testing.faults", *faults, "--"] if faults else ["perfedavg"])]
    proc = subprocess.Popen(
        [*command, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and checkpointed_round(run_dir) < after_round:
        time.sleep(0.05)
    time.sleep(delay_s)
    if proc.poll() is not None or checkpointed_round(run_dir) < after_round:
        os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate(timeout=60)[0]
        raise RuntimeError(f"the run did not reach round {after_round} in time: {output[-3000:]}")
    started = time.monotonic()
    os.killpg(proc.pid, signum)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError(f"{signal.Signals(signum).name}: still running 60 s later") from None
    seconds = time.monotonic() - started
    time.sleep(1)  # Ray's processes end with the driver
    return Stopped(run_dir, proc.returncode, output, seconds, processes_left(proc.pid), checkpointed_round(run_dir))


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: python -m perfedavg.testing.faults KIND:CLIENT:ROUND[:SECONDS] … -- [perfedavg overrides]")
    cut = argv.index("--")
    try:
        faults = [Fault.parse(spec) for spec in argv[:cut]]
    except ValueError as e:
        sys.exit(f"faults.py: {e}")
    import perfedavg.engines.client_app

    perfedavg.engines.client_app.app = faulty_client_app(*faults)  # the runner takes the ClientApp from here
    from perfedavg.cli.main import main as perfedavg_main

    sys.argv = ["perfedavg", *argv[cut + 1 :]]
    perfedavg_main()


if __name__ == "__main__":
    main(sys.argv[1:])
