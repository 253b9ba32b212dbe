#!/usr/bin/env bash
# README command 1. Fresh machine -> ROMI's idea in pictures and a first comparison, on the local Ray
# instance, in ~16 minutes on 2 cores (install included); a rerun reuses everything and takes ~40 seconds.
#   1. install romi into .venv
#   2. make the local maze2d-umaze (dense) dataset, 1M steps (skipped when a complete one is there)
#   3. train the reverse and forward dynamics models once and draw what each imagines (Figure 3 g/h)
#   4. a short Ray Tune sweep on the same models: ROMI-BCQ vs FOMI-BCQ vs BCQ, 5k steps, 1 seed
#   5. the report: table beside the paper's, learning curves, Figure 3 for the trained policies
# Every step is resumable: Ctrl-C leaves nothing half-written, and running this again continues.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n== [%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

TASK=maze2d-umaze-dense
SWEEPS=runs/sweeps
OUT=analysis/out/quickstart

step "1/5 install romi into .venv"
bash scripts/install.sh
romi=.venv/bin/romi

step "2/5 the $TASK dataset"
$romi data make $TASK    # exit 0 when a complete one with the same steps and seed is already there

step "3/5 reverse and forward models, and what they imagine"
# Into the sweep's artifact store: the sweep below reuses these models instead of training them again.
$romi imagine $TASK --profile quick --artifacts $SWEEPS/quickstart/artifacts --out $OUT

step "4/5 the sweep (Ray Tune, local Ray instance)"
$romi sweep quickstart --storage $SWEEPS --resume   # --resume: finished trials are kept, never rerun

step "5/5 the report"
$romi report $SWEEPS/quickstart --out $OUT

minutes=$(( (SECONDS - started + 30) / 60 ))
cat <<EOF

== done in ${minutes} min. What to look at, all in $OUT/:
  imagination_$TASK.png     red reverse rollouts END on dataset states (black); blue forward ones START
                            there and drift, some through walls: ROMI's imagination stays near the data.
  model_accuracy_$TASK.png  each model's error against the horizon of imagined steps.
  table3.md                 ROMI-BCQ vs FOMI-BCQ vs BCQ after 5k gradient steps (0.5 % of the paper's
                            1M, one seed: a first look, not the paper's result), the paper's numbers beside.
  learning_curves.png       score against gradient steps, one line per method.
  figure3_$TASK.png  the data, imagined rollouts and the trained policies' paths (paper Fig. 3).
Next (costs on this 2-core machine; \`romi sweep NAME\` prints its own plan and ETA before it starts):
  $romi sweep quick --resume      Table 3's umaze-sparse row, 3 seeds, 10k steps each: ~1 h
  $romi sweep reduced --resume    the same row at 100k steps (a tenth of the paper's budget): ~8-10 h
  $romi sweep table3 --resume     the paper's Table 3 at full budget (108 trials of 1M steps, ~7 h each
                                  on one core): weeks here; on a cluster see cluster/README.md
EOF
