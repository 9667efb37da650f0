# Shared set-up for scripts/demo and scripts/test: create or reuse .venv, install the pinned
# torch/torchvision pair first (they lie on local disk; any other request may pull GBs), then
# gcfeat in editable mode. A stamp file makes the second call skip what is already installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${GCFEAT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"

gcfeat_setup() {
  local extras="$1"            # "" or "[test]"
  if [ ! -x "$PY" ]; then
    echo "[setup] creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$PY" -c "import torch, torchvision" >/dev/null 2>&1; then
    echo "[setup] installing $TORCH_PIN (from local disk, about a minute)"
    "$PY" -m pip install -q --disable-pip-version-check $TORCH_PIN 2>&1 | grep -v "is ignored" || true
    "$PY" -c "import torch, torchvision" || { echo "[setup] torch install failed" >&2; exit 1; }
  fi
  local stamp="$VENV/.gcfeat-installed${extras}"
  if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
    echo "[setup] installing gcfeat${extras} (editable)"
    "$PY" -m pip install -q --disable-pip-version-check -e ".${extras}" 2>&1 | grep -v "is ignored" || true
    "$PY" -c "import gcfeat" || { echo "[setup] gcfeat install failed" >&2; exit 1; }
    touch "$stamp"
  fi
}
