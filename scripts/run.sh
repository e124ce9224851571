#!/usr/bin/env bash
# The main job: installs what it needs into .venv (first run: a few minutes), then runs a federation.
# With no arguments it runs the embedded default (Net on digits, hessian=hvp, offline); any Hydra overrides
# are passed on, e.g. `bash scripts/run.sh model=ann dataset=regression hessian=exact`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/perfedavg "$@"
