#!/usr/bin/env bash
# Resume the reduced run at the start of a sitting, on this machine or a new one (see README.md here):
#   bash analysis/results/reduced/resume.sh reduced-romi-fomi-seed2 [more sweep file names ...]
# Sets up what a new machine lacks (the pinned worktree and its venv, the dataset), copies the committed
# models into each sweep's artifact store (reused, not trained again), then runs each narrowed sweep file
# of sweeps/ with --resume, niced, one after the other. Run it detached (nohup setsid ... &): it outlives
# nothing but the sitting. Running state stays in $ROMI_STATE (default /work/state), outside the work tree.
set -euo pipefail
PINNED=9142e54
HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(git -C "$HERE" rev-parse --show-toplevel)
STATE=${ROMI_STATE:-/work/state}
WORKTREE=$STATE/reduced-wt
export MINARI_DATASETS_PATH=$STATE/minari
[ $# -ge 1 ] || { echo "usage: $0 SWEEP_NAME... (file names in $HERE/sweeps/, without .yaml)" >&2; exit 2; }
for name in "$@"; do
  [ -f "$HERE/sweeps/$name.yaml" ] || { echo "no sweep file $HERE/sweeps/$name.yaml" >&2; exit 2; }
done

mkdir -p "$STATE/sweeps"
if [ ! -d "$WORKTREE" ]; then
  git -C "$CHECKOUT" worktree add "$WORKTREE" "$PINNED" --detach
fi
[ -x "$WORKTREE/.venv/bin/romi" ] || (cd "$WORKTREE" && bash scripts/install.sh)
"$WORKTREE/.venv/bin/romi" data make maze2d-umaze-sparse  # reuses a complete dataset (exit 0)

echo 19 > /proc/self/autogroup 2>/dev/null || true  # nice alone does not yield to other sessions here
for name in "$@"; do
  mkdir -p "$STATE/sweeps/$name/artifacts"
  cp -rn "$HERE/models/." "$STATE/sweeps/$name/artifacts/"
  echo "=== $(date -u) sweep $name"
  (cd "$WORKTREE" && nice -n 19 .venv/bin/romi sweep "$HERE/sweeps/$name.yaml" --storage "$STATE/sweeps" --resume)
  echo "=== $(date -u) done $name"
done
