# The modelrollout operator image: `modelrollout run` (kopf) as an unprivileged user.
#
#   docker build -t REGISTRY/modelrollout:TAG .        (from the checkout's root)
#
# The Helm chart (charts/modelrollout) runs it with `run --all-namespaces` or `run --namespace NS`,
# its log format and its health endpoint; the same image also serves the `modelrollout` CLI
# (`docker run --rm IMAGE plan --help`).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install .` reads: the project metadata (its readme is part of it) and the package.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip install . && rm -rf /src

# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot without resolving a user name.
RUN groupadd --system --gid 10001 modelrollout \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin modelrollout
USER 10001:10001
WORKDIR /tmp

ENTRYPOINT ["modelrollout"]
CMD ["run", "--all-namespaces"]
