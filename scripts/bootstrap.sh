#!/usr/bin/env bash
# Create the project's virtualenv and install the package with its pinned dependencies.
# Usage: bash scripts/bootstrap.sh PYTHON VENV
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
export DEBIAN_FRONTEND=noninteractive

if ! command -v "$python" >/dev/null; then
    echo "bootstrap: installing python3 (Debian)"
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: ERROR: Python >= 3.11 required, $python is $("$python" -V 2>&1)" >&2
    exit 1
fi
if [[ ! -x $venv/bin/python ]]; then
    # Debian's python3 ships venv without ensurepip; python3-venv adds it.
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
        rm -rf "$venv"
        "$python" -m venv "$venv"
    fi
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'
echo "bootstrap: $venv ready ($("$venv/bin/python" -V))"
