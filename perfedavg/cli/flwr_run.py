"""``perfedavg-flwr-run``: Flower's ``flwr run`` with this project's checks before it and an honest exit code after.

``flwr run`` (flwr 1.41, 1.42) exits 0 once it has submitted a run, and after ``--stream`` whatever became of the run: a
mistake in the ``overrides`` run-config key surfaces as a traceback in the stream, and a SuperNode count short of
``num_clients`` only when the ServerApp gives up waiting. This command takes ``flwr run``'s arguments and

1. composes and checks the run config's ``overrides`` as the ``perfedavg`` command does, and compares
   ``--federation-config num-supernodes=N`` with ``num_clients``: a mistake is one ``perfedavg: error:`` line and
   exit 2, before anything starts. The data set, the device and the exact mode's memory are checked here only when
   the run goes to the local SuperLink (Flower's default ``local`` connection); a remote SuperLink's ServerApp checks
   them where the run executes;
2. runs ``flwr run … --stream`` (``--stream`` added if missing), passing its output through;
3. asks the SuperLink for the run's final status (``flwr ls --run-id … --format json``): ``finished:completed`` exits 0,
   anything else prints the status and its details in one line and exits 1. Ctrl-C ends the log stream (as it does
   for ``flwr run``), says that the run goes on at the SuperLink and how to stop it, and exits 130.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from perfedavg.config import ConfigError
from perfedavg.errors import exit_on_user_error


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="perfedavg-flwr-run", add_help=False)
    parser.add_argument("app", nargs="?", default=".")
    parser.add_argument("superlink", nargs="?")
    parser.add_argument("--run-config", "-c", action="append", default=[])
    parser.add_argument("--federation-config", action="append", default=[])
    parser.add_argument("--federation")
    parser.add_argument("--format")
    parser.add_argument("--stream", action="store_true")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise ConfigError(f"{' '.join(unknown)}: not an option of flwr run (see `flwr run --help`)")
    return args


def _config_values(values: list[str], key: str) -> Any:
    """The value of ``key`` in ``flwr run``-style ``k=v`` overrides (or a TOML file), parsed as Flower parses them."""
    from flwr.common.config import parse_config_args

    return parse_config_args(values).get(key) if values else None


def runs_locally(superlink: str | None) -> bool:
    """Whether ``flwr run [superlink]`` goes to the local SuperLink that ``flwr`` starts on this machine: the
    connection named (else the default one) in ``$FLWR_HOME/config.toml`` has Flower's ``:local:`` address, or there
    is no such file yet (``flwr`` then creates one whose default is ``local``). Read without creating anything."""
    from flwr.cli.constant import LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE
    from flwr.supercore.utils import get_flwr_home

    path = get_flwr_home() / "config.toml"
    if not path.is_file():
        return superlink in (None, "local")
    import tomllib

    try:
        section = tomllib.loads(path.read_text()).get("superlink", {})
    except (OSError, ValueError):
        return False  # flwr itself reports a broken file
    name = superlink or section.get("default")
    connection = section.get(name, {}) if name else {}
    return isinstance(connection, dict) and connection.get("address") == LOCAL_SUPERLINK_ADDRESS_MAGIC_VALUE


def check_run(argv: list[str]) -> dict[str, Any]:
    """Step 1 of the module's docstring: the resolved config of the run ``argv`` describes; raises ConfigError
    (or, for the local SuperLink, DataError or HessianTooLargeError as the ``perfedavg`` command does)."""
    from perfedavg.config.preparation import prepare_overrides

    args = _parse(argv)
    overrides = str(_config_values(args.run_config, "overrides") or "").split()
    cfg = prepare_overrides(overrides, machine_checks=runs_locally(args.superlink))
    supernodes = _config_values(args.federation_config, "num-supernodes")
    if supernodes is not None and int(supernodes) != cfg["num_clients"]:
        raise ConfigError(
            f"num-supernodes={supernodes}: the run has num_clients={cfg['num_clients']}, one SuperNode per client; "
            f'use --federation-config "num-supernodes={cfg["num_clients"]}" (or num_clients={supernodes} in overrides)'
        )
    return cfg


def _run_id(output: str) -> str | None:
    found = re.search(r"Successfully started run (\d+)", output) or re.search(r'"run-id":\s*"(\d+)"', output)
    return found.group(1) if found else None


def run_status(run_id: str, superlink: str | None) -> tuple[str, str]:
    """(status, details) of a run as the SuperLink reports it (``flwr ls``)."""
    cmd = [_flwr(), "ls", *([superlink] if superlink else []), "--run-id", run_id, "--format", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    try:
        run = json.loads(out)["runs"][0]
    except (ValueError, KeyError, IndexError):
        return "unknown", f"`{' '.join(cmd)}` answered: {out.strip()[-300:]}"
    return str(run.get("status", "unknown")), str(run.get("status-details", ""))


def _flwr() -> str:
    """The ``flwr`` of this environment (next to this Python), else the one on PATH."""
    local = Path(sys.executable).with_name("flwr")
    return str(local) if local.exists() else "flwr"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(f"usage: perfedavg-flwr-run [flwr run's arguments]\n\n{__doc__}\nflwr run's arguments: `flwr run --help`")
        return
    with exit_on_user_error():
        check_run(argv)
    if "--stream" not in argv:
        argv.append("--stream")
    proc = subprocess.Popen([_flwr(), "run", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if len(seen) < 200:  # the run id comes in the first lines
                seen.append(line)
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C ends the log stream (flwr run gets it too), not the run on the SuperLink
        proc.wait()
        run_id = _run_id("".join(seen))
        where = f"run {run_id} goes on at the SuperLink; stop it with `flwr stop {run_id}`" if run_id else "no run"
        print(f"perfedavg: interrupted: {where}", file=sys.stderr)
        sys.exit(130)
    run_id = _run_id("".join(seen))
    if code != 0 or run_id is None:
        print(f"perfedavg: error: flwr run exited {code} without starting a run", file=sys.stderr)
        sys.exit(code or 1)
    status, details = run_status(run_id, _parse(argv).superlink)
    if status != "finished:completed":
        first = (details.strip().splitlines() or [""])[0]
        print(f"perfedavg: error: run {run_id} ended {status}: {first}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
