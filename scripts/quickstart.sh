#!/usr/bin/env bash
# Fresh machine -> a quick ROMI reproduction on the local Ray instance.
# 1. install romi into .venv; 2. make the local maze2d-umaze dataset (about a minute);
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if ! .venv/bin/romi data info maze2d-umaze-sparse | grep -q "local: .*episodes"; then
  .venv/bin/romi data make maze2d-umaze-sparse
fi
.venv/bin/romi data list
