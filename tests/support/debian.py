"""Installing a Debian package for the test rig, once: `make test` runs the scripts that use
this (tests/support/postgres.py, prometheus.py) as root on Debian."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def apt_install(package: str, *, what: str, without: str) -> int:
    """``apt-get install`` ``package``; the package index is refreshed only when the plain
    install fails. Where that cannot work (not root, no apt-get) say so and what fails
    (``without``), and return 0: the tests that need it then fail with the reason."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(
            f"{what}: not installed and no way to install it here (needs root and apt-get);"
            f" {without}",
            file=sys.stderr,
        )
        return 0
    print(f"{what}: installing the {package} package", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    if subprocess.run(cmd, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(cmd, env=env, check=True)
    return 0
