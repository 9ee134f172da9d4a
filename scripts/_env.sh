# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not run).
# Creates .venv in the repository root if missing and installs the project with its
# test and ray extras (the Ray engine's tests run, not skip); re-running is cheap (pip skips what is already satisfied).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi
# Re-install only when setup.py changed since the last successful install.
STAMP="$VENV/.lvvit-opt-installed"
if [ ! -f "$STAMP" ] || [ "$REPO_ROOT/setup.py" -nt "$STAMP" ] || ! "$VENV/bin/python" -c "import lvvit_opt" 2>/dev/null; then
  echo "[setup] installing lvvit-opt and its dependencies into $VENV (first time: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$REPO_ROOT[test,ray]"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
