#!/usr/bin/env bash
# Create .venv with dockwarden and its development tools, unless it is already current with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi
echo "bootstrap: installing dockwarden and its dev tools into .venv" >&2
"$PY" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -e '.[dev]' 2> >(grep -v '^WARNING: Location' >&2)
echo "$want" >"$stamp"
