# The modelrollout operator image: `modelrollout run` (kopf) as an unprivileged user.
#
#   docker build -t REGISTRY/modelrollout:TAG .                         (from the checkout's root)
#   buildah bud --isolation chroot --storage-driver vfs -t REGISTRY/modelrollout:TAG .   (no engine)
#
# BASE is any Debian-like image with python3 (>= 3.11, with its venv module) and useradd: the
# official slim image by default; the tests build a Debian bookworm one with mmdebstrap
# (`modelrollout localenv image`, README "Install in a cluster"), since no registry is reached there.
#
# The Helm chart (charts/modelrollout) runs it with `run --all-namespaces` or `run --namespace NS`,
# its log format and its health endpoint; the same image also serves the `modelrollout` CLI
# (`docker run --rm IMAGE plan --help`).
ARG BASE=python:3.11-slim-bookworm

# ---- build: the checkout's wheel, installed with its pinned dependencies into a venv ---------------
FROM ${BASE} AS build

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# Only what the wheel is built from: the project metadata (its readme is part of it), the package,
# and the pins (constraints/operator.txt: the runtime dependencies; constraints/build.txt: the build
# backend).
WORKDIR /src
COPY constraints/ constraints/
COPY pyproject.toml README.md ./
COPY operator/ operator/

# Binary wheels only (no compiler in either stage). Then what the pod never imports leaves: the
# tests of numpy and scipy; kubernetes.aio (the client's asyncio twin, 68 MB: the operator uses
# kubernetes.client; kopf talks to the apiserver with aiohttp); the scipy subpackages that neither
# the operator nor the parts of scipy it loads import (io, signal, cluster, odr, fftpack, datasets,
# misc, differentiate: 11 MB; tests/unit/test_dockerfile.py checks that list against a real
# import of every module the pod runs); numpy's distutils (not f2py: scipy's array-API shim loads
# every attribute of numpy); C, Cython and stub sources; and pip and setuptools. The kubernetes
# client is generated code whose source is mostly docstrings (57 MB with its bytecode): it is kept
# only as bytecode compiled with -OO (19 MB); a traceback through it shows file and line but no
# source text. Everything else keeps its source, and its bytecode is compiled last, checked by hash
# rather than by mtime, for a read-only root filesystem.
# A build behind a TLS-inspecting proxy mounts the machine's CA bundle over the base's, read-only
# (buildah bud --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro);
# it is never copied into the image.
RUN if [ -f /etc/ssl/certs/ca-certificates.crt ]; then export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; fi \
 && python3 -m venv /opt/modelrollout \
 && PIP_CONSTRAINT=/src/constraints/build.txt \
        /opt/modelrollout/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/modelrollout/bin/pip install --no-compile --only-binary=:all: \
        --constraint constraints/operator.txt /wheels/modelrollout-*.whl \
 && /opt/modelrollout/bin/pip uninstall --yes pip setuptools \
 && site=$(/opt/modelrollout/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && find "$site/numpy" "$site/scipy" -depth -type d -name tests -exec rm -rf {} + \
 && rm -rf "$site/kubernetes/aio" "$site/numpy/distutils" \
 && (cd "$site/scipy" && rm -rf io signal cluster odr fftpack datasets misc differentiate) \
 && find "$site" \( -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' -o -name '*.c' -o -name '*.h' \) -delete \
 && find /opt/modelrollout -depth -type d -name __pycache__ -exec rm -rf {} + \
 && /opt/modelrollout/bin/python -m compileall -q -j 0 -b -o 2 --invalidation-mode unchecked-hash "$site/kubernetes" \
 && find "$site/kubernetes" -name '*.py' -delete \
 && /opt/modelrollout/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash "$site"

# ---- the image: the base and the venv, nothing else ----------------------------------------------
FROM ${BASE}

ENV PATH=/opt/modelrollout/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY --from=build /opt/modelrollout /opt/modelrollout

# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot without resolving a user name.
RUN groupadd --system --gid 10001 modelrollout \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin modelrollout
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["modelrollout"]
CMD ["run", "--all-namespaces"]
