"""The JavaScript package managers the npm tests drive: the machine's npm, and pinned pnpm and
yarn (Berry) that the project installs itself.

``python3 tests/support/jsclients.py install`` (run by ``make test``) installs ``pnpm`` and
``@yarnpkg/cli-dist`` (yarn Berry's self-contained build) with the real npm into a cache folder
outside the repository, ``$ENTREPOT_CACHE`` (or ``~/.cache/entrepot``)
``/js-clients/pnpm-<v>-yarn-<v>``. The folder is built beside its final place and renamed into
it, so it is either complete or absent: a second run does nothing, and an interrupted one
leaves no half install behind. npm installs them from the user's own registry
(``npm config get registry``; never named here) with the user's npm settings, as the go
command builds the test tools from the user's GOPROXY; nothing global changes (a local
``--prefix`` install, no ``-g``).

:func:`npm_bin`, :func:`pnpm_bin` and :func:`yarn_bin` answer a path, or :class:`Missing` with
the reason: a test that needs a client fails with that reason (as the Prometheus tests do).
This file runs as a script under the system python3: standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The newest pnpm that runs on Node 20 (pnpm 11 needs Node >= 22.13) and the newest yarn 4.
PNPM = "10.34.9"
YARN = "4.18.1"
YARN_PACKAGE = "@yarnpkg/cli-dist"
INSTALL_TIMEOUT = 600.0
_INSTALL_HINT = "run `python3 tests/support/jsclients.py install` (make test does)"


@dataclass(frozen=True)
class Missing:
    """Why a client cannot be had here, said so that a person can act on it."""

    reason: str


def cache_root() -> Path:
    base = os.environ.get("ENTREPOT_CACHE") or os.path.expanduser("~/.cache/entrepot")
    return Path(base) / "js-clients"


def install_dir() -> Path:
    """Where the pinned clients live; the name changes with the pins, so a new pin installs
    beside the old one instead of mixing with it."""
    return cache_root() / f"pnpm-{PNPM}-yarn-{YARN}"


def node_bin() -> Path | Missing:
    found = shutil.which("node")
    if found is None:
        return Missing("no `node` on PATH: install Node.js (Debian: apt-get install nodejs npm)")
    return Path(found)


def npm_bin() -> Path | Missing:
    """The machine's npm (the tests exercise the npm that users have, not a pinned copy)."""
    if isinstance(node := node_bin(), Missing):
        return node
    found = shutil.which("npm")
    if found is None:
        return Missing("no `npm` on PATH: install npm (Debian: apt-get install npm)")
    return Path(found)


def _package_dir(package: str) -> Path:
    return install_dir() / "node_modules" / package


def _installed_version(package: str) -> str | None:
    try:
        manifest = json.loads((_package_dir(package) / "package.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return version if isinstance(version, str) else None


def _pinned_bin(package: str, version: str, script: str) -> Path | Missing:
    """The client's own entry script (run with node: no reliance on a .bin symlink)."""
    if isinstance(node := node_bin(), Missing):
        return node
    found = _installed_version(package)
    path = _package_dir(package) / script
    if found != version or not path.is_file():
        return Missing(f"{package}@{version} is not installed in {install_dir()}: {_INSTALL_HINT}")
    return path


def pnpm_bin() -> Path | Missing:
    return _pinned_bin("pnpm", PNPM, "bin/pnpm.cjs")


def yarn_bin() -> Path | Missing:
    return _pinned_bin(YARN_PACKAGE, YARN, "bin/yarn.js")


def missing() -> list[Missing]:
    """Every client that cannot be had, with its reason (empty when all are here)."""
    return [found for found in (npm_bin(), pnpm_bin(), yarn_bin()) if isinstance(found, Missing)]


def install() -> int:
    """Install the pinned pnpm and yarn when they are missing (idempotent). Without npm, say
    so and return 0: the tests that need the clients then fail with the reason."""
    if not isinstance(pnpm_bin(), Missing) and not isinstance(yarn_bin(), Missing):
        return 0
    npm = npm_bin()
    if isinstance(npm, Missing):
        print(f"js-clients: cannot install pnpm and yarn: {npm.reason}", file=sys.stderr)
        return 0
    final = install_dir()
    final.parent.mkdir(parents=True, exist_ok=True)
    print(f"js-clients: installing pnpm@{PNPM} and {YARN_PACKAGE}@{YARN} into {final}")
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=".install-") as tmp:
        work = Path(tmp) / "prefix"
        work.mkdir()
        # A package.json of our own: npm then installs into this folder, never into a
        # project it finds above it.
        (work / "package.json").write_text('{"name": "entrepot-js-clients", "private": true}\n')
        command = [str(npm), "install", "--prefix", str(work), "--no-save", "--no-package-lock"]
        command += ["--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"]
        command += [f"pnpm@{PNPM}", f"{YARN_PACKAGE}@{YARN}"]
        try:
            done = subprocess.run(
                command,
                cwd=work,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            print(f"js-clients: npm install took over {INSTALL_TIMEOUT:.0f}s", file=sys.stderr)
            return 1
        if done.returncode != 0:
            print(f"js-clients: npm install failed:\n{done.stdout}{done.stderr}", file=sys.stderr)
            return 1
        if final.exists():  # a concurrent install won the race: keep its complete copy
            return 0
        os.replace(work, final)
    for found in (pnpm_bin(), yarn_bin()):
        if isinstance(found, Missing):
            print(f"js-clients: {found.reason}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        sys.exit(install())
    print("usage: python3 tests/support/jsclients.py install", file=sys.stderr)
    sys.exit(2)
