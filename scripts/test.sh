#!/usr/bin/env bash
# The whole test suite: lint, types, then unit and integration tests on the real engine and registry.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/lab.sh up
scripts/bootstrap.sh
.venv/bin/ruff check daemon tests bench
.venv/bin/ruff format --check daemon tests bench
.venv/bin/mypy
exec .venv/bin/pytest -n "${DOCKWARDEN_TEST_WORKERS:-4}" "$@"
