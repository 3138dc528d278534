#!/usr/bin/env bash
# Peer comparison (stretch): the cache-hit .info/.mod benchmark of bench/gomod.py, run against
# another Go module proxy warmed from the same kind of upstream (an entrepot serving fixture
# modules from a temporary directory). Only this script is kept in the repository; the peer is
# built into ~/.cache/entrepot/bench-peers/bin and nothing of its source is committed.
#
#   bench/peers.sh [--duration S] [--connections N]
#
# Peer: the goproxy/goproxy project's `goproxy server` (flags --address, --cacher-dir; upstream
# taken from its GOPROXY environment). Override with PEER_MODULE / PEER_VERSION. If the build
# fails, the exact command and its error are printed and written to bench/results/, and the
# script exits 0: a missing peer is a result, not a failure. All traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

PEER_MODULE=${PEER_MODULE:-github.com/goproxy/goproxy/cmd/goproxy}
PEER_VERSION=${PEER_VERSION:-v0.16.2}
DURATION=10
CONNECTIONS=64
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        *) echo "usage: $0 [--duration S] [--connections N]" >&2; exit 2 ;;
    esac
done

BIN_DIR="$HOME/.cache/entrepot/bench-peers/bin"
RESULTS=bench/results
mkdir -p "$BIN_DIR" "$RESULTS"
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT="$RESULTS/peers-$STAMP.txt"
PY=.venv/bin/python
command -v wrk >/dev/null || { echo "peers: wrk is required (bench/run.sh installs it)" >&2; exit 1; }
make --no-print-directory install

# --- build ------------------------------------------------------------------------------------
PEER_BIN=${PEER_BIN:-$BIN_DIR/$(basename "$PEER_MODULE")}  # PEER_BIN: an already built peer
BUILD_CMD=(env GOTOOLCHAIN=local GOBIN="$BIN_DIR" go install "$PEER_MODULE@$PEER_VERSION")
{
    echo "# peer comparison $STAMP"
    echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs))," \
        "$(go version 2>/dev/null || echo 'go: not found'), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "build: ${BUILD_CMD[*]}"
} | tee "$REPORT"
if [ ! -x "$PEER_BIN" ] || [ "${PEER_REBUILD:-0}" = 1 ]; then
    if ! out=$(timeout 600 "${BUILD_CMD[@]}" 2>&1); then
        { echo "build FAILED:"; echo "$out" | sed 's/^/    /'; echo "peer skipped."; } | tee -a "$REPORT"
        exit 0
    fi
fi
echo "peer binary: $PEER_BIN" | tee -a "$REPORT"

# --- processes (stopped by PID on any exit) ---------------------------------------------------
TMP=$(mktemp -d /tmp/entrepot-peers-XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() {  # URL, log file
    for _ in $(seq 200); do
        curl -fs -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "peers: $1 did not answer; log:" >&2
    tail -20 "$2" >&2
    exit 1
}

# Fixtures: the same small module as bench/gomod.py, written by the tests' own writer.
"$PY" - "$TMP/files" <<'EOF'
import sys
from pathlib import Path

sys.path.insert(0, "tests")
from support.modules import simple, write_module

write_module(Path(sys.argv[1]), simple("example.com/bench/small", "v1.0.0"))
EOF

UP_PORT=$(free_port)
GOPROXY="file://$TMP/files" .venv/bin/entrepot serve --listen "127.0.0.1:$UP_PORT" \
    --data "$TMP/up-data" --workers 1 >"$TMP/upstream.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$UP_PORT/healthz" "$TMP/upstream.log"

PEER_PORT=$(free_port)
# The peer fetches through the go command / its own client from GOPROXY; no checksum database
# and no other network: the fixture module exists only on the local upstream.
env GOPROXY="http://127.0.0.1:$UP_PORT" GOSUMDB=off GONOSUMDB='*' GOFLAGS=-mod=mod \
    GOPATH="$TMP/gopath" GOMODCACHE="$TMP/gopath/pkg/mod" GOCACHE="$TMP/gocache" \
    "$PEER_BIN" server --address "127.0.0.1:$PEER_PORT" --cacher-dir "$TMP/peer-cache" \
    >"$TMP/peer.log" 2>&1 &
PIDS+=($!)
PEER="http://127.0.0.1:$PEER_PORT"
INFO=/example.com/bench/small/@v/v1.0.0.info
MOD=/example.com/bench/small/@v/v1.0.0.mod
wait_http "$PEER$INFO" "$TMP/peer.log"  # the first request fetches and caches
for p in "$INFO" "$MOD" "$INFO" "$MOD"; do
    curl -fs -o /dev/null "$PEER$p"
done

# --- the same wrk run as bench/gomod.py (a.) --------------------------------------------------
cat >"$TMP/infomod.lua" <<EOF
local paths = {"$INFO", "$MOD"}
local reqs = {}
local i = 0
function init(args)
  for k, p in ipairs(paths) do reqs[k] = wrk.format("GET", p) end
end
function request()
  i = (i % #reqs) + 1
  return reqs[i]
end
EOF
WRK_CMD=(wrk -t1 "-c$CONNECTIONS" "-d${DURATION}s" --latency -s "$TMP/infomod.lua" "$PEER$INFO")
echo "\$ ${WRK_CMD[*]}" | tee -a "$REPORT"
"${WRK_CMD[@]}" | tee -a "$REPORT"
echo "peer log, last lines:" | tee -a "$REPORT"
tail -5 "$TMP/peer.log" | sed 's/^/    /' | tee -a "$REPORT"
echo "report: $REPORT"
