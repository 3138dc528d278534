#!/usr/bin/env bash
# Benchmarks of the Go module mirror (not tests): `make bench`, or `bench/run.sh [--quick] ...`;
# `bench/run.sh --sumdb [...]` runs the checksum-database benchmarks (bench/sumdb.py);
# `bench/run.sh --peers [...]` Entrepôt against goproxy and Athens in one run (bench/peers.py);
# `bench/run.sh --cores [...]` HTTP server cores side by side (bench/cores.py);
# `bench/run.sh --npm [...]` Entrepôt's npm mirror against Verdaccio 5.33 in one run
# (bench/npm_peers.py; Verdaccio is installed with npm into ~/.cache/entrepot/bench-peers).
# Everything runs on 127.0.0.1; see docs/benchmarks.md for what is measured.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing wrk" >&2
        # The package index is refreshed only when the plain install fails.
        apt-get install -y wrk || { apt-get update && apt-get install -y wrk; }
    else
        echo "bench: wrk is required (e.g. 'sudo apt-get install -y wrk')" >&2
        exit 1
    fi
fi
command -v curl >/dev/null 2>&1 || { echo "bench: curl is required" >&2; exit 1; }

make --no-print-directory install

if [ "${1:-}" = "--sumdb" ]; then
    shift
    exec .venv/bin/python bench/sumdb.py "$@"
fi
if [ "${1:-}" = "--cores" ]; then
    shift
    exec .venv/bin/python bench/cores.py "$@"
fi
if [ "${1:-}" = "--npm" ]; then
    shift
    command -v npm >/dev/null 2>&1 || { echo "bench: npm (and node) are required" >&2; exit 1; }
    exec .venv/bin/python bench/npm_peers.py "$@"
fi
if [ "${1:-}" = "--peers" ]; then
    shift
    exec .venv/bin/python bench/peers.py "$@"
fi
exec .venv/bin/python bench/gomod.py "$@"
