#!/usr/bin/env bash
# Create .venv with Python >= 3.12 and install tatonnet with its test tools.
# Usage: bash setup.sh            (idempotent; re-run after pulling)
set -euo pipefail
cd "$(dirname "$0")"

find_python() {
    local candidates=(python3.12 python3.13 python3)
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root=$(pyenv root)
        candidates+=("$root"/versions/3.12*/bin/python "$root"/versions/3.13*/bin/python)
    fi
    for py in "${candidates[@]}"; do
        if "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
    PY=$(find_python) || { echo "setup.sh: error: tatonnet needs Python >= 3.12 (none found on PATH or in pyenv)" >&2; exit 2; }
    rm -rf .venv
    "$PY" -m venv .venv
fi
# -qq: pip's and the build backend's notices stay quiet; errors (a failed install, a
# dependency conflict) are still printed and stop the script.
.venv/bin/python -m pip install -qq --upgrade pip
.venv/bin/python -m pip install -qq -e ".[test]"
echo "setup.sh: ready ($(.venv/bin/python --version), $(.venv/bin/python -c 'import mesa; print("mesa", mesa.__version__)'))" >&2
