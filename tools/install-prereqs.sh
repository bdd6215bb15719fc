#!/usr/bin/env bash
# Install what the local test environment needs beyond Python, idempotently:
#   - Debian packages: prometheus (the real server, scraped by e2e tests), openssl
#     (self-signed serving certificate and service-account keys for kube-apiserver), stress-ng
#     (the e2e tier under load, tools/e2e-under-load.sh), and mmdebstrap, buildah, umoci and runc
#     (the operator's image built and run without a Docker engine: tests/e2e/test_image.py,
#     `modelrollout localenv image`);
#   - a Go toolchain new enough to build kube-apiserver and etcd (checked, not installed).
# apt-get runs only when a package is missing. Prometheus's own service is never started:
# the tests run their own instance on a free loopback port.
set -euo pipefail

GO_MIN="1.26.0"   # etcd v3.6.16's go.mod asks for go 1.26.0; GOTOOLCHAIN=local forbids auto-download

say() { printf 'install-prereqs: %s\n' "$*" >&2; }

# ---- apt packages -----------------------------------------------------------------------------
missing=()
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || missing+=(prometheus)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v stress-ng >/dev/null 2>&1 || missing+=(stress-ng)
for tool in mmdebstrap buildah umoci runc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${missing[*]}; no apt-get here. Install them with your package manager" \
        "(Prometheus >= 2.40 from https://prometheus.io/download/ also works: put 'prometheus' on PATH)."
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      say "missing: ${missing[*]}; run as root or install sudo: apt-get install -y ${missing[*]}"
      exit 1
    fi
  fi
  # Keep dpkg from starting Debian's prometheus service (it would hold port 9090).
  policy_created=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  cleanup() { if [ -n "$policy_created" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi; }
  trap cleanup EXIT
  say "installing ${missing[*]} with apt-get"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "apt packages present: prometheus, openssl, stress-ng, mmdebstrap, buildah, umoci, runc"
fi

# ---- Go toolchain -----------------------------------------------------------------------------
GO_BIN="${GO:-}"
if [ -n "$GO_BIN" ] && [ ! -x "$GO_BIN" ]; then
  say "GO=$GO_BIN is not an executable: install Go >= $GO_MIN from https://go.dev/dl/ or unset GO"
  exit 1
fi
if [ -z "$GO_BIN" ]; then
  if command -v go >/dev/null 2>&1; then GO_BIN="$(command -v go)"
  elif [ -x /usr/local/go/bin/go ]; then GO_BIN=/usr/local/go/bin/go
  fi
fi
if [ -z "$GO_BIN" ]; then
  say "no Go toolchain found: install Go >= $GO_MIN from https://go.dev/dl/ (e.g. to /usr/local/go) and put its bin/ on PATH"
  exit 1
fi
go_version="$(GOTOOLCHAIN=local "$GO_BIN" env GOVERSION 2>/dev/null || true)"
go_version="${go_version#go}"
version_ge() {  # $1 >= $2, both dotted numbers
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
if [ -z "$go_version" ] || ! version_ge "${go_version%%[!0-9.]*}" "$GO_MIN"; then
  say "Go at $GO_BIN is ${go_version:-unknown}, need >= $GO_MIN: install a newer Go from https://go.dev/dl/"
  exit 1
fi
say "go $go_version at $GO_BIN: ok"
