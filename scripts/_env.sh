# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not run).
# Creates .venv in the repository root if missing and installs the project with the extras in
# LVVIT_EXTRAS: demo.sh sets none (what the main job needs, ~5.0 GB, 4.5 GB of it torch and
# the CUDA libraries its default wheel brings), test.sh sets "test,ray" (pytest, transformers,
# onnxscript, import-linter, Ray: ~0.4 GB more; the Ray engine's tests run, not skip).
# Re-running is cheap: pip runs again only when setup.py or the extras changed.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi
# Re-install only when setup.py changed since the last successful install of these extras
# (one stamp per set of extras: the test extras installed once stay installed for the demo).
EXTRAS="${LVVIT_EXTRAS:-}"
STAMP="$VENV/.lvvit-opt-installed${EXTRAS:+-${EXTRAS//,/-}}"
if [ ! -f "$STAMP" ] || [ "$REPO_ROOT/setup.py" -nt "$STAMP" ] || ! "$VENV/bin/python" -c "import lvvit_opt" 2>/dev/null; then
  echo "[setup] installing lvvit-opt${EXTRAS:+ [$EXTRAS]} and its dependencies into $VENV (first time: a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$REPO_ROOT${EXTRAS:+[$EXTRAS]}"
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
