"""Verdaccio, the npm peer of the benchmarks: installed from npm into a cache, run on 127.0.0.1.

``python3 bench/verdaccio.py install`` (``bench/npm_peers.py`` calls :func:`install`) installs
``verdaccio@5.33.0`` with the machine's npm into ``$ENTREPOT_CACHE`` (or ``~/.cache/entrepot``)
``/bench-peers/verdaccio-5.33.0``, with an ``overrides`` entry pinning ``node-fetch`` to 2.7.0
(Verdaccio 5.33's own pin does not run on Node 20; see ../shared/peers/README.md). npm installs
from the user's own registry (``npm config get registry``; never named here) with the user's
settings; nothing global changes. The folder is built beside its final place and renamed into
it: a second run does nothing, an interrupted one leaves no half install.

:func:`write_config` writes a configuration with one uplink (the benchmark's fixture registry),
storage in a temporary folder, tarballs cached, listening on 127.0.0.1 only, log level warn.
Standard library only: also runs under the system python3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

VERSION = "5.33.0"
NODE_FETCH = "2.7.0"
INSTALL_TIMEOUT = 900.0


def cache_dir() -> Path:
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / "bench-peers" / f"verdaccio-{VERSION}"


def entry_script(root: Path | None = None) -> Path:
    """Verdaccio's own entry script (run with node: no reliance on a .bin symlink)."""
    return (root or cache_dir()) / "node_modules" / "verdaccio" / "bin" / "verdaccio"


def installed_version(root: Path | None = None) -> str | None:
    path = (root or cache_dir()) / "node_modules" / "verdaccio" / "package.json"
    try:
        version = json.loads(path.read_text("utf-8")).get("version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def node_fetch_version(root: Path | None = None) -> str | None:
    """The node-fetch that Verdaccio's code loads (the override must have taken)."""
    path = (root or cache_dir()) / "node_modules" / "node-fetch" / "package.json"
    try:
        version = json.loads(path.read_text("utf-8")).get("version")
    except (OSError, ValueError):
        return None
    return version if isinstance(version, str) else None


def package_json() -> dict[str, object]:
    """The package.json that installs Verdaccio, with node-fetch pinned for Node 20."""
    return {
        "name": "entrepot-bench-verdaccio",
        "private": True,
        "dependencies": {"verdaccio": VERSION},
        "overrides": {"node-fetch": NODE_FETCH},
    }


def install_command(npm: str) -> list[str]:
    return [
        npm,
        "install",
        "--no-audit",
        "--no-fund",
        "--omit=dev",
        "--loglevel=error",
        "--no-update-notifier",
    ]


def install(*, verbose: bool = True) -> dict[str, object]:
    """Install Verdaccio into :func:`cache_dir` unless it is there; what was done, with the
    exact command (the registry is npm's configured one)."""
    final = cache_dir()
    npm = shutil.which("npm")
    out: dict[str, object] = {"dir": str(final), "package_json": package_json()}
    out["command"] = f"cd <dir> && {' '.join(install_command('npm'))}"
    if installed_version() == VERSION and node_fetch_version() == NODE_FETCH:
        out["cached"] = True
        if verbose:
            print(f"verdaccio: cached {final}", flush=True)
        return out
    if npm is None or shutil.which("node") is None:
        raise RuntimeError("verdaccio: node and npm are needed (Debian: apt-get install npm)")
    final.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        print(f"verdaccio: installing verdaccio@{VERSION} into {final}", flush=True)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".verdaccio-") as tmp:
        work = Path(tmp) / "prefix"
        work.mkdir()
        (work / "package.json").write_text(json.dumps(package_json(), indent=2) + "\n")
        try:
            done = subprocess.run(
                install_command(npm),
                cwd=work,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"verdaccio: npm install took over {INSTALL_TIMEOUT:.0f} s"
            ) from None
        if done.returncode != 0:
            raise RuntimeError(f"verdaccio: npm install failed:\n{done.stdout}{done.stderr}")
        if installed_version(work) != VERSION or node_fetch_version(work) != NODE_FETCH:
            found = (installed_version(work), node_fetch_version(work))
            raise RuntimeError(f"verdaccio: installed (verdaccio, node-fetch) = {found}")
        if final.exists():  # an older, broken install: replaced whole
            shutil.rmtree(final)
        os.replace(work, final)
    out["cached"] = False
    return out


def config(storage: Path, port: int, uplink: str, *, maxage: str) -> dict[str, object]:
    """Verdaccio's configuration (JSON is YAML, so it is written as JSON): every package proxied
    to ``uplink`` with tarballs cached, packuments trusted for ``maxage``."""
    access = {"access": "$all", "publish": "$authenticated", "proxy": "fixture"}
    return {
        "storage": str(storage),
        "listen": f"127.0.0.1:{port}",
        "uplinks": {
            "fixture": {"url": uplink, "cache": True, "maxage": maxage, "timeout": "120s"},
        },
        "packages": {"@*/*": access, "**": access},
        "log": {"type": "stdout", "format": "pretty", "level": "warn"},
        # the default's max_body_size (10mb) is for publishing; packuments pass it by
        "max_body_size": "100mb",
    }


def write_config(folder: Path, port: int, uplink: str, *, maxage: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    doc = config(folder / "storage", port, uplink, maxage=maxage)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def command(config_path: Path, port: int) -> list[str]:
    node = shutil.which("node") or "node"
    script = str(entry_script())
    return [node, script, "--config", str(config_path), "--listen", f"127.0.0.1:{port}"]


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        print(json.dumps(install(), indent=2))
        sys.exit(0)
    print("usage: python3 bench/verdaccio.py install", file=sys.stderr)
    sys.exit(2)
