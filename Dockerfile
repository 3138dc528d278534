# syntax=docker/dockerfile:1
#
# The Entrepôt image. One image, two programs:
#   entrepot serve ...        the Go module mirror (the default: ENTRYPOINT + CMD below)
#   entrepot-operator run     the Kubernetes operator (the Helm chart sets this command)
#
#   docker build -t registry.example.com/entrepot/entrepot:0.1.0 .
#
# See docs/helm.md ("The image").

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG GO_IMAGE=golang:1.26-bookworm

# The Go toolchain, for `direct` fetches (the go command drives git).
FROM ${GO_IMAGE} AS go

# The project and its dependencies in a virtual environment, pinned by constraints.txt.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY . .
RUN python -m venv /opt/entrepot \
 && /opt/entrepot/bin/pip install --constraint constraints.txt . \
 && /opt/entrepot/bin/entrepot --version \
 && /opt/entrepot/bin/entrepot-operator --help > /dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="entrepot" \
      org.opencontainers.image.description="Entrepôt: a verifying, caching Go module mirror and its Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# git (and ssh for git over ssh) for `direct`; CA certificates for https upstreams; tini as
# PID 1 (see ENTRYPOINT).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client tini \
 && rm -rf /var/lib/apt/lists/*

COPY --from=go /usr/local/go /usr/local/go
COPY --from=build /opt/entrepot /opt/entrepot

# A fixed non-root user (65532, as distroless "nonroot"); the Helm chart and the operator's
# pods run as this uid with a read-only root filesystem.
RUN groupadd --gid 65532 entrepot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin entrepot \
 && mkdir -p /var/cache/entrepot /etc/entrepot \
 && chown 65532:65532 /var/cache/entrepot

# GOTOOLCHAIN=local: the go command never downloads another toolchain. Bytecode was compiled
# at install time; the root filesystem may be read-only.
ENV PATH=/opt/entrepot/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    GOTOOLCHAIN=local \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
WORKDIR /var/cache/entrepot
EXPOSE 8080
VOLUME /var/cache/entrepot
# tini is PID 1: it reaps orphans (the git processes of a go command killed on a timeout are
# reparented to PID 1) and passes SIGTERM on to entrepot, which shuts down gracefully.
ENTRYPOINT ["tini","--","entrepot"]
CMD ["serve","--listen","0.0.0.0:8080","--data","/var/cache/entrepot"]
