#!/usr/bin/env bash
# Tune the step sizes (α, β) of each method for one experiment (conf/experiment/EXPERIMENT.yaml) on validation data,
# then write conf/experiment/EXPERIMENT_tuned.yaml (the experiment with each method's chosen values) and a summary
# scripts/results/tune_EXPERIMENT.md, and print the best trials.
#
#   bash scripts/tune.sh paper_mnist dataset.path=../shared/data/mnist
#   TRIALS=4 ROUNDS=20 bash scripts/tune.sh paper_digits       # a quick look, offline
#
# Methods: FedAvg (β, and the α of its personalization step before evaluation), Per-FedAvg FO (hessian=fo),
# Per-FedAvg HF with the paper's finite difference (hessian=fd) and with an exact Hessian-vector product
# (hessian=hvp), and on request (METHODS) any other method (`python -m perfedavg.algorithms methods`: pFedMe, Ditto,
# the FedAvg baselines fedavg_ft and fedavg_matched, Local, installed plugins), each tuned on its own: at large α
# the two estimates behave differently (measured on paper_mnist: with fd's best values hvp diverged at round 13).
# hessian=exact takes hvp's values (the same product, exactly). What a method's study searches is its algorithm's
# declared search space (`python -m perfedavg.algorithms search METHOD`: α and β log-uniform in [3e-4, 0.3], and
# e.g. λ for pFedMe and Ditto, pFedMe's K, fedavg_ft's adapt_steps), given to the Optuna sweeper as overrides.
# Protocol: each client holds out VAL_FRACTION of its training split (dataset.val_fraction) and evaluation reports on
# it (eval_split=val), so tuning never sees test data; seed 0; runs in-process, JOBS at a time.
#   1. Search: one Optuna study per method (hydra-optuna-sweeper, TPE, sampler seed 0;
#      conf/hydra/sweeper/step_sizes.yaml): TRIALS runs of ROUNDS rounds over the method's search space,
#      objective the final personalized validation accuracy (the loss, minimized, for regression).
#   2. Confirm: the best CONFIRM trials of each method run again over the experiment's own num_rounds; the chosen
#      values are the best confirmed run's (a trial that diverges later is not chosen). CONFIRM=0 skips this.
# Environment: TRIALS (20), ROUNDS (300), CONFIRM (3), JOBS (number of CPUs), VAL_FRACTION (0.2),
# METHODS ("fedavg fo fd hvp"), TUNE_DIR (multirun/tune-EXPERIMENT), TUNED_CONFIG and TUNE_REPORT (where the two
# files go), MERGE (1: keep the entries of the methods not tuned now from an existing TUNED_CONFIG, e.g. to add
# METHODS="pfedme ditto" to a tuned experiment). Cut off? Run it again with the same TUNE_DIR: finished studies are
# kept (an unfinished one starts over) and confirmation runs continue from their checkpoints.
# The overrides after EXPERIMENT that say what is computed (partition.alpha=0.1, not dataset.path=…) are written into
# the tuned experiment: its step sizes hold for that setting (scripts/tune_report.py).
set -euo pipefail
cd "$(dirname "$0")/.."
conf_dir=${PERFEDAVG_CONF_DIR:-conf}  # the config tree perfedavg reads (preparation.py: $PERFEDAVG_CONF_DIR, else conf/)
if [ $# -lt 1 ] || [ ! -f "$conf_dir/experiment/$1.yaml" ]; then
  echo "usage: bash scripts/tune.sh EXPERIMENT [overrides...]; EXPERIMENT is one of:" \
    "$(ls "$conf_dir/experiment" | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
experiment=$1
shift
bash scripts/setup.sh
jobs=${JOBS:-$(nproc)}
trials=${TRIALS:-20}
rounds=${ROUNDS:-300}
val_fraction=${VAL_FRACTION:-0.2}
methods=${METHODS:-fedavg fo fd hvp}
confirm=${CONFIRM:-3}
tune_dir=${TUNE_DIR:-multirun/tune-$experiment}
# Accuracy is maximized; for a regression experiment the objective is the personalized loss, minimized.
direction=$(.venv/bin/python -c 'import sys; from perfedavg.run.runner import compose
print("maximize" if compose(sys.argv[1:]).dataset.task == "classification" else "minimize")' "experiment=$experiment" "$@")
method_args() {  # the overrides that select a method (its algorithm's declaration says which)
  .venv/bin/python -m perfedavg.algorithms overrides "$1"
}
search_space() {  # the method's search space as Optuna sweeper overrides, one a line
  .venv/bin/python -m perfedavg.algorithms search "$1"
}
for method in $methods; do method_args "$method" >/dev/null || exit 2; done
# The setting written into the tuned experiment, and MERGE's target, are checked now rather than after the tuning.
.venv/bin/python scripts/tune_report.py "$tune_dir" --check --experiment "$experiment" \
  ${TUNED_CONFIG:+--config-out "$TUNED_CONFIG"} ${MERGE:+--merge} --overrides "$@" || exit 2
validation=("dataset.val_fraction=$val_fraction" eval_split=val backend=inprocess client_cpus=1 seed=0)
start=$(date +%s)
echo "[tune] 1/2 search: one study per method ($methods)" >&2
for method in $methods; do
  read -r -a choice <<< "$(method_args "$method")"
  mapfile -t space < <(search_space "$method")
  study=$tune_dir/$method
  if [ -f "$study/optimization_results.yaml" ]; then
    echo "[tune] $method: finished study kept ($study)" >&2
    continue
  fi
  rm -rf "$study"
  echo "[tune] $method: $trials trials × $rounds rounds, $jobs at a time → $study" >&2
  .venv/bin/perfedavg -m "experiment=$experiment" "${choice[@]}" "num_rounds=$rounds" "eval_every=$rounds" \
    "${validation[@]}" hydra/sweeper=step_sizes "${space[@]}" "hydra.sweeper.direction=$direction" \
    "hydra.sweeper.n_trials=$trials" "hydra.sweeper.n_jobs=$jobs" hydra/launcher=joblib "hydra.launcher.n_jobs=$jobs" \
    "hydra.sweep.dir=$study" 'hydra.sweep.subdir=trial${hydra.job.num}' "$@"
done
echo "[tune] studies done in $(( $(date +%s) - start )) s" >&2
# 2/2: the best CONFIRM trials of each study again, over the experiment's own num_rounds (still on validation data):
# step sizes that win over ROUNDS rounds can diverge later. Each run resumes (resume=auto) if cut off.
if [ "$confirm" -gt 0 ]; then
  echo "[tune] 2/2 confirm: the best $confirm trials of each method over the experiment's num_rounds" >&2
  candidates=$(.venv/bin/python scripts/tune_report.py "$tune_dir" --experiment "$experiment" --methods $methods \
    --candidates "$confirm")
  running=0
  while read -r method trial values; do
    read -r -a choice <<< "$(method_args "$method")"
    read -r -a chosen <<< "$values"  # alpha=… beta=… (and algorithm.lam=…, adapt_steps=…: the searched keys)
    run_dir=$tune_dir/$method/confirm-$trial
    echo "[tune] $method: confirming $values → $run_dir (log: $run_dir.log)" >&2
    ( .venv/bin/perfedavg "experiment=$experiment" "${choice[@]}" "${chosen[@]}" "${validation[@]}" \
        resume=auto "hydra.run.dir=$run_dir" "$@" >"$run_dir.log" 2>&1 \
        && echo "[tune] $method: confirm-$trial finished" >&2 \
        || echo "[tune] $method: confirm-$trial stopped (see $run_dir.log)" >&2 ) &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  done <<< "$candidates"
  wait
  echo "[tune] confirmation done" >&2
fi
echo "[tune] all done in $(( $(date +%s) - start )) s" >&2
.venv/bin/python scripts/tune_report.py "$tune_dir" --experiment "$experiment" --methods $methods \
  ${TUNED_CONFIG:+--config-out "$TUNED_CONFIG"} ${TUNE_REPORT:+--out "$TUNE_REPORT"} ${MERGE:+--merge} \
  --command "TRIALS=$trials ROUNDS=$rounds CONFIRM=$confirm VAL_FRACTION=$val_fraction bash scripts/tune.sh $experiment $*" \
  --overrides "$@"
