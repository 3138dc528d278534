#!/usr/bin/env bash
# Run the end-to-end suite against a kind cluster (needs Docker and kind on PATH).
# The CI machines have no Docker engine; there the suite starts its own control plane
# (e2e/cluster/), which `make test` does by default.
set -euo pipefail
cd "$(dirname "$0")/../.."
name=entrepot-e2e
kubeconfig="$(mktemp)"
trap 'kind delete cluster --name "$name" >/dev/null 2>&1 || true; rm -f "$kubeconfig"' EXIT
kind create cluster --name "$name" --config e2e/kind/kind-config.yaml --kubeconfig "$kubeconfig" --wait 120s
make install
# kind's nodes run real pods; our tests only need the API, volumes from kind's default
# StorageClass (local-path), and helm (ours if built, else the one on PATH).
ENTREPOT_E2E_KUBECONFIG="$kubeconfig" .venv/bin/pytest e2e "$@"
