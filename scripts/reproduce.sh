#!/usr/bin/env bash
# Reproduce the Per-FedAvg paper's comparison for one experiment (conf/experiment/EXPERIMENT.yaml):
#   FedAvg, Per-FedAvg FO (hessian=fo), Per-FedAvg HF (hessian=fd, the paper's) and HF with an exact
#   Hessian-vector product (hessian=hvp), each over 5 seeds, then a table and plots (scripts/report.py).
#
#   bash scripts/reproduce.sh paper_digits                 # offline
#   bash scripts/reproduce.sh paper_synthetic num_rounds=50  # extra Hydra overrides go to every run
#
# FedAvg (like pFedMe and Ditto) ignores the Hessian mode, so its fd and hvp cells would repeat its fo runs bit for
# bit: they are not run.
# Runs go in parallel through Hydra's joblib launcher (JOBS worker processes, default: the number of CPUs), each
# with backend=inprocess: one process per run and no Ray, so parallel runs cannot collide and no run waits on
# another's actors (tests/test_federation.py checks inprocess == Ray metric for metric).
# BACKEND=ray runs each simulation through Flower's Ray engine instead; every run then starts its own Ray instance
# (ray.init(address="local")), so parallel runs do not share a cluster (give them JOBS × client_cpus ≤ CPUs).
# Environment: JOBS (parallel runs), SEEDS (default 0,1,2,3,4), METHODS (default fedavg,fo,fd,hvp: which to run, e.g.
# METHODS=fo,hvp for a paired HF-vs-FO test; any method of `python -m perfedavg.algorithms methods` — pfedme, ditto,
# fedavg_ft, fedavg_matched, local, installed plugins — adds it, docs/algorithms.md), SWEEP_DIR (default multirun/EXPERIMENT-<time>),
# BACKEND (inprocess or ray; default inprocess), DIAGNOSTICS (default 0: off; N: the Per-FedAvg runs log curvature
# diagnostics every N rounds, diagnostics.every=N, which leaves their results unchanged; TensorBoard's curvature/
# group shows them).
# A run that stops (e.g. diverges to a non-finite model) does not stop the others: the report lists it as skipped
# and the script exits 1 at the end.
# Cut off? Run the same command again with SWEEP_DIR=<the sweep's directory>: every run has resume=auto, so finished
# runs are kept as they are and interrupted ones continue from their last checkpoint (at most one round is lost).
set -euo pipefail
cd "$(dirname "$0")/.."
conf_dir=${PERFEDAVG_CONF_DIR:-conf}  # the config tree perfedavg reads (preparation.py: $PERFEDAVG_CONF_DIR, else conf/)
if [ $# -lt 1 ] || [ ! -f "$conf_dir/experiment/$1.yaml" ]; then
  echo "usage: bash scripts/reproduce.sh EXPERIMENT [overrides...]; EXPERIMENT is one of:" \
    "$(ls "$conf_dir/experiment" | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
experiment=$1
shift
methods=${METHODS:-fedavg,fo,fd,hvp}
bash scripts/setup.sh
declare -A modes_of  # algorithm → its Hessian modes to run, comma-separated (fo for an algorithm that reads none)
algorithms=()        # in METHODS's order
for method in ${methods//,/ }; do
  if ! choice=$(.venv/bin/python -m perfedavg.algorithms overrides "$method" 2>&1); then  # names the allowed ones
    echo "reproduce.sh: METHODS=$methods: ${choice#perfedavg: error: }" >&2
    exit 2
  fi
  algorithm=${choice%% *} mode=${choice##*hessian=}
  algorithm=${algorithm#algorithm=}
  if [ -z "${modes_of[$algorithm]+set}" ]; then algorithms+=("$algorithm"); modes_of[$algorithm]=$mode
  else modes_of[$algorithm]+=",$mode"; fi
done
n_methods=$(echo "${methods//,/ }" | wc -w)
if [ "$n_methods" -eq 0 ]; then
  echo "reproduce.sh: METHODS is empty (allowed: $(.venv/bin/python -m perfedavg.algorithms methods | tr '\n' ' '))" >&2
  exit 2
fi
jobs=${JOBS:-$(nproc)}
seeds=${SEEDS:-0,1,2,3,4}
sweep_dir=${SWEEP_DIR:-multirun/$experiment-$(date +%Y%m%d-%H%M%S)}
n_seeds=$(echo "$seeds" | tr ',' '\n' | wc -l)
common=(
  "experiment=$experiment" "seed=$seeds" "backend=${BACKEND:-inprocess}" client_cpus=1 resume=auto
  hydra/launcher=joblib "hydra.launcher.n_jobs=$jobs" hydra.launcher.verbose=10
  "hydra.sweep.dir=$sweep_dir" 'hydra.sweep.subdir=${algorithm.name}-${hessian.mode}-seed${seed}'
)
start=$(date +%s)
echo "[reproduce] $experiment: $((n_methods * n_seeds)) runs ($n_seeds seeds × $n_methods methods: $methods)," \
  "$jobs at a time → $sweep_dir" >&2
failed=0  # a run that stops (e.g. diverges) fails its multirun after the others finish; the sweep goes on
for algorithm in "${algorithms[@]}"; do
  echo "[reproduce] $algorithm with hessian=${modes_of[$algorithm]}" >&2
  diagnose=()  # curvature diagnostics, for the algorithms that read diagnostics.every
  if [ "${DIAGNOSTICS:-0}" != 0 ] && .venv/bin/python -m perfedavg.algorithms reads "$algorithm" | grep -qw diagnostics.every; then
    diagnose=("diagnostics.every=$DIAGNOSTICS")
  fi
  .venv/bin/perfedavg -m "${common[@]}" "algorithm=$algorithm" "hessian=${modes_of[$algorithm]}" "${diagnose[@]}" "$@" \
    || failed=1
done
echo "[reproduce] all runs done in $(( $(date +%s) - start )) s; writing the report" >&2
.venv/bin/python scripts/report.py "$sweep_dir"
if [ "$failed" -ne 0 ]; then
  echo "[reproduce] some runs failed (see their log lines above and report.md's skipped runs)" >&2
  exit 1
fi
