#!/usr/bin/env bash
# Run the test suite: sets up .venv (first run), checks the architecture (import-linter's
# contracts in .importlinter, via scripts/lint_imports.py; a broken contract fails the
# build), then pytest. Extra args go to pytest. Installs the test and Ray extras on top of
# what scripts/demo.sh installs. The whole suite takes ~15-25 min on 2 cores.
LVVIT_EXTRAS="test,ray"
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO_ROOT"
"$VENV/bin/python" scripts/lint_imports.py
exec "$VENV/bin/python" -m pytest "$@"
