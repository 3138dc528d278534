# syntax=docker/dockerfile:1
#
# The Entrepôt image. One image, two programs:
#   entrepot serve ...        the Go module mirror (the default: ENTRYPOINT + CMD below)
#   entrepot-operator run     the Kubernetes operator (the Helm chart sets this command)
#
#   docker build --build-arg VERSION=0.1.0 -t registry.example.com/entrepot/entrepot:0.1.0 .
#   make image                # Docker if it runs here, else buildah (tests/support/image.py)
#
# The build arguments are the only seam: PYTHON_IMAGE and GO_IMAGE name the bases (make image
# points them at bases it makes itself when the official ones cannot be pulled), VERSION the
# label. Two optional build secrets reach pip and nothing else, and stay out of every layer:
# `pip.conf` (mounted as /etc/pip.conf: the package index of the machine that builds) and
# `ca.crt` (a CA bundle that file may name). Without them pip uses its defaults.
# See docs/image.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG GO_IMAGE=golang:1.26-bookworm

# The Go toolchain: only its go command is taken, for `direct` fetches (it drives git).
FROM ${GO_IMAGE} AS go

# The project and its dependencies in a virtual environment, pinned by constraints.txt.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The dependencies first, in a layer of their own that a source change does not rebuild: the
# project is installed once with empty packages (hatchling needs the folders), then removed.
COPY pyproject.toml constraints.txt README.md ./
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt \
    python3 -m venv /opt/entrepot \
 && mkdir -p proxy/entrepot operator/entrepot_operator \
 && touch proxy/entrepot/__init__.py operator/entrepot_operator/__init__.py \
 && /opt/entrepot/bin/pip install --constraint constraints.txt . \
 && /opt/entrepot/bin/pip uninstall --yes entrepot
COPY proxy proxy
COPY operator operator
# The project itself, then the venv's own installers (pip, setuptools) out: the image runs
# the project, it installs nothing.
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=ca.crt \
    /opt/entrepot/bin/pip install --no-deps --constraint constraints.txt . \
 && /opt/entrepot/bin/pip uninstall --yes pip setuptools \
 && /opt/entrepot/bin/entrepot --version \
 && /opt/entrepot/bin/entrepot-operator --help > /dev/null

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="entrepot" \
      org.opencontainers.image.description="Entrepôt: verifying, caching mirrors of Go modules and npm, and their Kubernetes operator" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# git (and ssh for git over ssh) for `direct`; CA certificates for https upstreams; tini as
# PID 1 (see ENTRYPOINT). No package lists or archives are left behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git openssh-client tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

# The go command alone (15 MB, not the 270 MB toolchain): `direct` runs `go list -m` and
# `go mod download`, which compile nothing. It finds its GOROOT by an (empty) pkg/tool
# beside bin/, made below; go.env holds the toolchain's defaults (GOSUMDB among them). The
# mirror reads the keys of the go command's checksum databases from two of its sources
# (entrepot.config.toolchain_sumdb_keys): without them the default GOSUMDB fails at start.
COPY --from=go /usr/local/go/bin/go /usr/local/go/bin/go
COPY --from=go /usr/local/go/go.env /usr/local/go/VERSION /usr/local/go/
COPY --from=go /usr/local/go/src/cmd/go/internal/modfetch/key.go \
     /usr/local/go/src/cmd/go/internal/modfetch/sumdb.go \
     /usr/local/go/src/cmd/go/internal/modfetch/
COPY --from=build /opt/entrepot /opt/entrepot

# A fixed non-root user (65532, as distroless "nonroot"); the Helm chart and the operator's
# pods run as this uid with a read-only root filesystem.
RUN mkdir -p /usr/local/go/pkg/tool \
 && groupadd --gid 65532 entrepot \
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
