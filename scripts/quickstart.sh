#!/usr/bin/env bash
# Fresh machine -> a quick ROMI reproduction on the local Ray instance:
# install romi into .venv, make the local maze2d-umaze dataset (~1 min), run the quick sweep
# (Table 3's umaze row: ROMI-BCQ vs FOMI-BCQ vs BCQ, 3 seeds; tens of minutes on 2 cores), report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# `data info` checks the dataset it finds (exit 2 and the command that re-creates it if it is damaged).
info=$(.venv/bin/romi data info maze2d-umaze-sparse)
if ! grep -q "local: .*checked" <<<"$info"; then
  .venv/bin/romi data make maze2d-umaze-sparse
fi
.venv/bin/romi sweep tune_configs/quick.yaml --resume   # --resume: keeps finished trials on a rerun
.venv/bin/romi report runs/sweeps/quick --out analysis/out/quick
