#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with torch and the package (+ dev extras).
# Fast when already set up: it only reinstalls when pyproject.toml changed.
#   CRCGS_VENV=path  where the environment lives (default: .venv in the repository root)
#   CRCGS_TORCH=spec the torch requirement installed when no torch is present (default torch==2.13.0,
#                    the CPU wheel on this machine kind; GPU users: install their CUDA build of torch
#                    into the venv first, set-up then leaves it alone)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CRCGS_VENV:-$root/.venv}"
extras="${CRCGS_EXTRAS:-dev}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch" >/dev/null 2>&1; then
    "$py" -m pip install --quiet --disable-pip-version-check "${CRCGS_TORCH:-torch==2.13.0}"
fi
stamp="$venv/.crcgs-installed-$extras"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    "$py" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]"
    touch "$stamp"
fi
