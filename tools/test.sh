#!/usr/bin/env bash
# Installs what the tests need and runs all of them: lint, types, import contracts, generated-file
# drift, then pytest (unit, integration and e2e tiers). Safe to run again; everything is cached.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n==> %s (t+%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

# apt packages, the .venv, the control plane binaries (shared with tools/demo.sh)
source tools/setup.sh

step "ruff"
.venv/bin/ruff check operator tests bench
step "mypy"
.venv/bin/mypy
step "import contracts"
.venv/bin/lint-imports

step "pytest"
set +e
.venv/bin/pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: failing the run" >&2
  exit 1
fi
step "done (pytest exit $rc)"
exit "$rc"
