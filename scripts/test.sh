#!/usr/bin/env bash
# Run the test suite: sets up .venv (first run), then pytest. Extra args go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$REPO_ROOT"
exec "$VENV/bin/python" -m pytest "$@"
