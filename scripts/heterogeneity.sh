#!/usr/bin/env bash
# How the comparison of methods changes with the degree of heterogeneity: for each level of one key (by default
# partition.alpha, the Dirichlet concentration α_D of the users' label mixes), tune every method's step sizes on
# validation data for that level (scripts/tune.sh), run the tuned methods over several seeds on test data
# (scripts/reproduce.sh), then one table and figure across the levels (scripts/heterogeneity_report.py).
#
#   bash scripts/heterogeneity.sh dirichlet_mnist 10,0.3,0.1 dataset.path=/path/to/mnist
#   TRIALS=4 ROUNDS=5 CONFIRM=0 SEEDS=0,1 bash scripts/heterogeneity.sh smoke 10,0.1 partition=dirichlet  # a look
#
# Per level L (KEY=L), with TAG = the key's last part and the level (partition.alpha=0.1: alpha0.1):
#   tuning:  OUT_DIR/TAG/tune (tune.sh's TUNE_DIR), the tuned experiment conf/experiment/EXPERIMENT_TAG_tuned.yaml
#            (it carries KEY=L: its step sizes hold at that level), the tuning report TUNE_REPORTS/tune_EXPERIMENT_TAG.md;
#   test runs: OUT_DIR/TAG/runs (reproduce.sh's SWEEP_DIR, with its report.md and plots).
# Then OUT_DIR/report.md and OUT_DIR/heterogeneity.png over all levels (also written by hand for several data sets:
# python scripts/heterogeneity_report.py OUT_DIR_1 OUT_DIR_2 --out …).
# Environment: METHODS (space- or comma-separated; default "fedavg fo hvp"), SEEDS (0,1,2), KEY (partition.alpha),
# OUT_DIR (multirun/heterogeneity-EXPERIMENT), TUNE_REPORTS (scripts/results/heterogeneity), and tune.sh's TRIALS
# (10), ROUNDS (100), CONFIRM (2), VAL_FRACTION, JOBS; the extra overrides go to every tuning and test run.
# Cut off? Run the same command again: finished studies and runs are kept, interrupted ones continue (resume=auto).
# A test run that stops (diverges) does not stop the others; the report lists it and the script exits 1 at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
conf_dir=${PERFEDAVG_CONF_DIR:-conf}  # the config tree perfedavg reads (preparation.py: $PERFEDAVG_CONF_DIR, else conf/)
if [ $# -lt 2 ] || [ ! -f "$conf_dir/experiment/$1.yaml" ]; then
  echo "usage: bash scripts/heterogeneity.sh EXPERIMENT LEVEL[,LEVEL...] [overrides...]; EXPERIMENT is one of:" \
    "$(ls "$conf_dir/experiment" | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
experiment=$1
levels=$2
shift 2
key=${KEY:-partition.alpha}
methods=${METHODS:-fedavg fo hvp}
methods=${methods//,/ }
seeds=${SEEDS:-0,1,2}
out_dir=${OUT_DIR:-multirun/heterogeneity-$experiment}
tune_reports=${TUNE_REPORTS:-scripts/results/heterogeneity}
export TRIALS=${TRIALS:-10} ROUNDS=${ROUNDS:-100} CONFIRM=${CONFIRM:-2}  # tune.sh's budget per (level, method)
for level in ${levels//,/ }; do
  if ! [[ $level =~ ^[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
    echo "heterogeneity.sh: LEVELS=$levels: '$level' is not a number ($key takes one value per level)" >&2
    exit 2
  fi
done
mkdir -p "$out_dir" "$tune_reports"
start=$(date +%s)
failed=0
n_levels=$(echo "${levels//,/ }" | wc -w)
i=0
for level in ${levels//,/ }; do
  i=$((i + 1))
  tag="${key##*.}$level"
  tuned="${experiment}_${tag}_tuned"
  echo "[heterogeneity] level $i/$n_levels: $key=$level | $(( ($(date +%s) - start) / 60 ))m elapsed" >&2
  METHODS="$methods" TUNE_DIR="$out_dir/$tag/tune" TUNED_CONFIG="$conf_dir/experiment/$tuned.yaml" \
    TUNE_REPORT="$tune_reports/tune_${experiment}_$tag.md" \
    bash scripts/tune.sh "$experiment" "$key=$level" "$@"
  METHODS="${methods// /,}" SEEDS="$seeds" SWEEP_DIR="$out_dir/$tag/runs" \
    bash scripts/reproduce.sh "$tuned" "$@" || failed=1
done
echo "[heterogeneity] all levels done in $(( ($(date +%s) - start) / 60 )) min; writing the report" >&2
.venv/bin/python scripts/heterogeneity_report.py "$out_dir" --key "$key" --out "$out_dir/report.md" \
  --figure "$out_dir/heterogeneity.png"
if [ "$failed" -ne 0 ]; then
  echo "[heterogeneity] some test runs stopped (see the per-level reports under $out_dir)" >&2
  exit 1
fi
