#!/usr/bin/env bash
# Issue 31's baseline runs, resumable, from a pinned worktree, running state outside the work tree:
#   bash analysis/results/baselines/run.sh COMMIT [STEP ...]
# STEPs (default: all, in this order; each skips what is already done):
#   data        both umaze-sparse datasets (d4rl recipe, the default; minari recipe)
#   sweeps      plain BCQ x seeds 0-2 at 100k steps on each (romi/sweeps/baselines-{d4rl,minari}.yaml),
#               two trials at a time, exported into trials/<recipe>/ as they finish
#   independent the comparison harness (benchmarks/independent_bcq.py) to 60k steps: d3rlpy's BCQ (its own
#               virtual environment) and the authors' BCQ (a checkout of sfujim/BCQ given by FUJIMOTO_BCQ)
#               on each recipe's data, seeds 0-2, appended to curves-<recipe>.jsonl here
# Run it detached (nohup setsid ... &) at the start of a sitting; rerun the same command in the next one.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 COMMIT [data|sweeps|independent ...]" >&2; exit 2; }
PINNED=$1; shift
STEPS=${*:-data sweeps independent}
HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(git -C "$HERE" rev-parse --show-toplevel)
STATE=${ROMI_STATE:-/work/state}
WORKTREE=$STATE/baselines-wt
export MINARI_DATASETS_PATH=$STATE/minari
mkdir -p "$STATE/sweeps"
[ -d "$WORKTREE" ] || git -C "$CHECKOUT" worktree add "$WORKTREE" "$PINNED" --detach
[ -x "$WORKTREE/.venv/bin/romi" ] || (cd "$WORKTREE" && bash scripts/install.sh)
romi="$WORKTREE/.venv/bin/romi"
echo 19 > /proc/self/autogroup 2>/dev/null || true  # nice alone does not yield to other sessions here

for step in $STEPS; do
  echo "=== $(date -u) $step"
  case $step in
    data)
      "$romi" data make maze2d-umaze-sparse                  # d4rl recipe; reuses a complete one (exit 0)
      "$romi" data make maze2d-umaze-sparse --recipe minari ;;
    sweeps)
      for recipe in d4rl minari; do
        (cd "$WORKTREE" && nice -n 19 "$romi" sweep "baselines-$recipe" --storage "$STATE/sweeps" --resume) || true
        "$romi" export "$STATE/sweeps/baselines-$recipe" --out "$HERE/trials/$recipe" --commit "$PINNED"
      done ;;
    independent)
      d3=$STATE/d3rlpy-venv
      if [ ! -x "$d3/bin/python" ]; then
        python3 -m venv "$d3"
        "$d3/bin/pip" install -q torch==2.13.0 d3rlpy==2.8.1 gymnasium==1.2.2 gymnasium-robotics mujoco scipy \
          pydantic pyyaml
      fi
      for recipe in minari d4rl; do
        data=$STATE/bcq-compare/umaze-$recipe.npz
        task_flag=$([ "$recipe" = minari ] && echo "--recipe minari" || true)
        [ -f "$data" ] || "$WORKTREE/.venv/bin/python" "$WORKTREE/benchmarks/independent_bcq.py" export \
          --task maze2d-umaze-sparse $task_flag --out "$data"
        for seed in 0 1 2; do
          PYTHONPATH=$WORKTREE nice -n 19 "$d3/bin/python" "$WORKTREE/benchmarks/independent_bcq.py" run \
            --impl d3rlpy --data "$data" --seed $seed --steps 60000 --log "$HERE/curves-$recipe.jsonl"
          if [ -n "${FUJIMOTO_BCQ:-}" ]; then
            nice -n 19 "$WORKTREE/.venv/bin/python" "$WORKTREE/benchmarks/independent_bcq.py" run \
              --impl fujimoto --fujimoto-bcq "$FUJIMOTO_BCQ" --data "$data" --seed $seed --steps 60000 \
              --log "$HERE/curves-$recipe.jsonl"
          fi
        done
      done ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
done
echo "=== $(date -u) done"
