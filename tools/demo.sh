#!/usr/bin/env bash
# The README's first command: installs what the demo needs on a fresh Debian machine (the same
# steps as tools/test.sh, from tools/setup.sh: apt packages, the .venv, and a Go build of
# kube-apiserver and etcd, about 4 minutes the first time and cached afterwards), then runs
#   modelrollout demo "$@"     (e.g. --scenario guardrail-breach, --output json, --out DIR)
# in the folder it was called from. The setup's output goes to stderr, so with --output json
# stdout holds only the demo's summary. Safe to run again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
(
  cd "$root"
  export SETUP_WITHOUT_HELM=1  # helm is only for the chart's tests
  # shellcheck source=tools/setup.sh
  source tools/setup.sh
) >&2
printf '\n==> modelrollout demo %s\n' "$*" >&2
exec "$root/.venv/bin/modelrollout" demo "$@"
