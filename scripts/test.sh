#!/usr/bin/env bash
# The test command: installs what it needs into .venv (first run: a few minutes), then runs the whole suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k curvature`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
