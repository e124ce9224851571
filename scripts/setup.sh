#!/usr/bin/env bash
# Create .venv (if needed) and install perfedavg with its test tools into it.
# Re-installs only when pyproject.toml changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
stamp=.venv/.perfedavg-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "[setup] installing perfedavg and its dependencies into .venv, PyTorch first: an unpinned torch is a CUDA" >&2
    echo "[setup] build of several GB (minutes). For a CPU-only build, stop now (Ctrl-C), install one into .venv" >&2
    echo "[setup] (README, 'The two commands') and run this command again." >&2
  else
    echo "[setup] installing perfedavg and its dependencies into .venv (torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') kept)" >&2
  fi
  log=.venv/pip-install.log
  # pip's own lines (what it collects, downloads — indented by pip — and installs) as progress; the whole output in
  # $log. Installing the collected packages prints nothing for a minute or more: say so before it starts.
  progress() {
    tee -a "$log" | { grep --line-buffered -E '^\s*(Collecting|Downloading|Installing|Successfully)' || true; } \
      | sed -u -e 's/^\s*/[setup]   /' \
        -e '/Installing collected packages/a [setup]   (unpacking and installing them takes a minute or more, silently)' >&2
  }
  : > "$log"
  if ! { .venv/bin/python -m pip install --upgrade pip 2>&1 | progress; } \
     || ! { .venv/bin/python -m pip install -e '.[dev]' 2>&1 | progress; }; then
    tail -40 "$log" >&2
    echo "[setup] pip install failed; full log: $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
