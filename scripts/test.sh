#!/usr/bin/env bash
# The test command: installs what it needs into .venv (first run: a few minutes), then runs the whole suite with one
# pytest-xdist worker per CPU (at most 4), each handed one test at a time, the slow ones first (tests/conftest.py).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k curvature`, `bash scripts/test.sh -m "not slow"`
# (the fast subset) or `bash scripts/test.sh -n 0` (one process, no workers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n auto --maxprocesses 4 --maxschedchunk 1 "$@"
