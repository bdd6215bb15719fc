# Installs what the local stack needs, idempotently, on a fresh Debian machine of the CI kind:
# the apt packages and a Go check (tools/install-prereqs.sh), the Python venv in .venv with the
# project installed in editable mode (with its test extras), and the Go builds of kube-apiserver,
# kube-controller-manager and etcd (cached by version under ~/.cache/modelrollout).
#
# Sourced, not run, from the checkout's root by tools/test.sh and tools/demo.sh, so the steps
# print under the caller's `step` headings; a caller without one gets a plain heading.
# shellcheck shell=bash

if ! declare -F step >/dev/null; then
  _setup_start=$(date +%s)
  step() { printf '\n==> %s (t+%ss)\n' "$1" "$(( $(date +%s) - _setup_start ))"; }
fi

step "system prerequisites"
bash tools/install-prereqs.sh

step "python environment"
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

# The demo needs no helm (only the chart's tests do): tools/demo.sh sets SETUP_WITHOUT_HELM=1.
if [ "${SETUP_WITHOUT_HELM:-0}" = 1 ]; then
  step "control plane binaries (cold build takes a while; cached afterwards)"
  .venv/bin/modelrollout localenv build --no-helm
else
  step "control plane binaries and helm (cold build takes a while; cached afterwards)"
  .venv/bin/modelrollout localenv build
fi

# The operator's image (tests/e2e/test_image.py): built here, where set-up may reach Debian's
# mirrors and PyPI, so that the test itself only starts the cached image. Cached by content.
if [ "${SETUP_WITHOUT_HELM:-0}" != 1 ]; then
  step "the operator's image (mmdebstrap + buildah, cold about 2-3 min; cached afterwards)"
  .venv/bin/modelrollout localenv image >/dev/null
fi
