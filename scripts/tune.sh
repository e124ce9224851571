#!/usr/bin/env bash
# Tune the step sizes (α, β) of each method for one experiment (conf/experiment/EXPERIMENT.yaml) on validation data,
# then write conf/experiment/EXPERIMENT_tuned.yaml (the experiment with each method's chosen values) and a summary
# scripts/results/tune_EXPERIMENT.md, and print the best trials.
#
#   bash scripts/tune.sh paper_mnist dataset.path=../shared/data/mnist
#   TRIALS=4 ROUNDS=20 bash scripts/tune.sh paper_digits       # a quick look, offline
#
# Methods: FedAvg (β, and the α of its personalization step before evaluation), Per-FedAvg FO (hessian=fo) and
# Per-FedAvg HF (hessian=fd, the paper's estimator). HF with hessian=hvp (or exact) is the same algorithm with an
# exact Hessian-vector product, so it takes HF's values.
# Protocol: each client holds out VAL_FRACTION of its training split (dataset.val_fraction) and evaluation reports on
# it (eval_split=val), so tuning never sees test data. One Optuna study per method (hydra-optuna-sweeper, TPE, sampler
# seed 0; conf/hydra/sweeper/step_sizes.yaml): TRIALS runs of ROUNDS rounds each, α and β log-uniform in
# [3e-4, 0.3], objective the final personalized validation accuracy, seed 0. Runs are in-process, JOBS at a time.
# Environment: TRIALS (20), ROUNDS (300), JOBS (number of CPUs), VAL_FRACTION (0.2), METHODS ("fedavg fo fd"),
# TUNE_DIR (multirun/tune-EXPERIMENT), TUNED_CONFIG and TUNE_REPORT (where the two files go). Cut off? Run it again with the same TUNE_DIR: finished studies are kept, an
# unfinished one starts over.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ ! -f "conf/experiment/$1.yaml" ]; then
  echo "usage: bash scripts/tune.sh EXPERIMENT [overrides...]; EXPERIMENT is one of:" \
    "$(ls conf/experiment | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
experiment=$1
shift
bash scripts/setup.sh
jobs=${JOBS:-$(nproc)}
trials=${TRIALS:-20}
rounds=${ROUNDS:-300}
val_fraction=${VAL_FRACTION:-0.2}
methods=${METHODS:-fedavg fo fd}
tune_dir=${TUNE_DIR:-multirun/tune-$experiment}
# Accuracy is maximized; for a regression experiment the objective is the personalized loss, minimized.
direction=$(.venv/bin/python -c 'import sys; from perfedavg.runner import compose
print("maximize" if compose(sys.argv[1:]).dataset.task == "classification" else "minimize")' "experiment=$experiment" "$@")
start=$(date +%s)
for method in $methods; do
  case $method in
    fedavg) choice=(algorithm=fedavg hessian=fo) ;;
    fo | fd | hvp | exact | diag) choice=(algorithm=perfedavg "hessian=$method") ;;
    *) echo "tune: error: METHODS: unknown method '$method'; allowed: fedavg fo fd hvp exact diag" >&2; exit 2 ;;
  esac
  study=$tune_dir/$method
  if [ -f "$study/optimization_results.yaml" ]; then
    echo "[tune] $method: finished study kept ($study)" >&2
    continue
  fi
  rm -rf "$study"
  echo "[tune] $method: $trials trials × $rounds rounds, $jobs at a time → $study" >&2
  .venv/bin/perfedavg -m "experiment=$experiment" "${choice[@]}" \
    "num_rounds=$rounds" "eval_every=$rounds" "dataset.val_fraction=$val_fraction" eval_split=val \
    backend=inprocess client_cpus=1 seed=0 \
    hydra/sweeper=step_sizes "hydra.sweeper.direction=$direction" "hydra.sweeper.n_trials=$trials" "hydra.sweeper.n_jobs=$jobs" \
    hydra/launcher=joblib "hydra.launcher.n_jobs=$jobs" \
    "hydra.sweep.dir=$study" 'hydra.sweep.subdir=trial${hydra.job.num}' "$@"
done
echo "[tune] all studies done in $(( $(date +%s) - start )) s" >&2
.venv/bin/python scripts/tune_report.py "$tune_dir" --experiment "$experiment" --methods $methods \
  ${TUNED_CONFIG:+--config-out "$TUNED_CONFIG"} ${TUNE_REPORT:+--out "$TUNE_REPORT"} \
  --command "TRIALS=$trials ROUNDS=$rounds VAL_FRACTION=$val_fraction bash scripts/tune.sh $experiment $*"
