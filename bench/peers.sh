#!/usr/bin/env bash
# Peer comparison: Entrepôt, goproxy and Athens served warm from the same fixture upstream and
# measured in one run, interleaved (bench/peers.py; docs/benchmarks.md, "Peer comparison").
#
#   bench/peers.sh [--rounds N] [--duration S] [--big-mb 50] [--rebuild] ...
#
# The peers are built from the snapshots in ../shared/peers into $ENTREPOT_CACHE/bench-peers
# (default ~/.cache/entrepot/bench-peers); nothing of their code enters the repository. A peer
# that fails to build is reported (command and error) and the others are measured. All traffic
# stays on 127.0.0.1. Same as `bench/run.sh --peers ...`.
set -euo pipefail
exec "$(dirname "$0")/run.sh" --peers "$@"
