#!/usr/bin/env bash
# The main job: set up .venv (first run), then the whole pipeline on random-init lvvit_s.
# Extra args go to `lvvit-opt run` (e.g. --checkpoint lvvit_s-26M-224-83.3.pth.tar).
# Installs what the main job needs, no test or Ray extras (scripts/test.sh adds those).
LVVIT_EXTRAS=""
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO_ROOT"
exec "$VENV/bin/lvvit-opt" run --out runs/demo "$@"
