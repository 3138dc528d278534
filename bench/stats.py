"""Recording overhead: cached 5.4 MB zip hits with statistics on and off.

Issue 10's target: recording adds less than 3% to cached-zip throughput. An *upstream*
``entrepot serve`` on 127.0.0.1 serves the fixture modules of bench/gomod.py; for each round a
mirror with ``ENTREPOT_STATS__ENABLED=true`` and one with ``false`` (interleaved, each with its
own data directory, the zip fetched once before) are loaded with wrk as bench/gomod.py's
"cache-hit 5 MB zip" run. Prints each run and the ratio off/on of the summed requests.
Not a test: ``.venv/bin/python bench/stats.py [--rounds 3] [--duration 5]``; do not run it
while other benchmarks or the test suite load the machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gomod  # bench/gomod.py, beside this file: its servers, fixtures and wrk runs

TARGET_PERCENT = 3.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--zip-connections", type=int, default=16)
    p.add_argument("--workers", type=int, help="mirror workers (default: the server's default)")
    opts = p.parse_args(argv)
    gomod.install_signal_handlers()
    info = gomod.machine()
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, {info['wrk']}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    totals = {"true": [0.0, 0.0], "false": [0.0, 0.0]}  # requests, seconds
    with tempfile.TemporaryDirectory(prefix="entrepot-bench-stats-") as tmpname:
        tmp = Path(tmpname)
        updir = tmp / "upstream-files"
        gomod.write_module(updir, gomod.medium_module("v1.0.0"))
        with gomod.server(tmp, name="upstream", proxy=f"file://{updir}", workers=1) as up:
            for round_ in range(1, opts.rounds + 1):
                order = ("true", "false") if round_ % 2 else ("false", "true")
                for enabled in order:
                    name = f"mirror-{round_}-{'on' if enabled == 'true' else 'off'}"
                    env = {"ENTREPOT_STATS__ENABLED": enabled}
                    with gomod.server(
                        tmp, name=name, proxy=up.url, workers=opts.workers, env=env
                    ) as mirror:
                        print(f"\nround {round_}, stats.enabled={enabled}")
                        run = gomod.bench_zip_hit(mirror, tmp, opts, "v1.0.0")
                    if run.errors:
                        print(f"    wrk errors: {run.errors}")
                    totals[enabled][0] += run.result["requests"]
                    totals[enabled][1] += run.seconds
    on = totals["true"][0] / totals["true"][1]
    off = totals["false"][0] / totals["false"][1]
    cost = (off / on - 1) * 100
    verdict = "meets" if cost < TARGET_PERCENT else "misses"
    print(
        f"\nzip hits: stats on {on:,.1f} req/s, off {off:,.1f} req/s over {opts.rounds} rounds:"
        f" recording costs {cost:+.1f}% ({verdict} the < {TARGET_PERCENT:g}% target)"
    )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
