"""npm's own libraries as test oracles: the ``validate-npm-package-name``, ``semver`` and
``ssri`` that the npm installed on this machine bundles, run by node on a whole batch of inputs
at once (one process per test).

The project needs node and npm anyway (the npm mirror's tests run the real clients). Where
they are missing, the differential tests fail with the reason, unless ``ENTREPOT_TEST_NO_NODE=1``
says to skip them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

SKIP_VARIABLE = "ENTREPOT_TEST_NO_NODE"


def _npm_package() -> Path | None:
    npm = shutil.which("npm")
    if npm is None:
        return None
    # bin/npm is a link to <prefix>/lib/node_modules/npm/bin/npm-cli.js (or a copy beside it).
    for candidate in (Path(npm).resolve().parent.parent, Path(npm).parent.parent / "lib"):
        if (candidate / "node_modules").is_dir() and (candidate / "package.json").is_file():
            return candidate
        nested = candidate / "node_modules" / "npm"
        if (nested / "node_modules").is_dir():
            return nested
    return None


def module_path(name: str) -> Path | None:
    package = _npm_package()
    if package is None:
        return None
    path = package / "node_modules" / name
    return path if path.is_dir() else None


def unavailable_reason(*modules: str) -> str | None:
    if shutil.which("node") is None:
        return "no node on PATH"
    for module in modules:
        if module_path(module) is None:
            return f"npm's bundled {module} not found (is npm installed?)"
    return None


def require(*modules: str) -> None:
    reason = unavailable_reason(*modules)
    if reason is None:
        return
    if os.environ.get(SKIP_VARIABLE) == "1":
        pytest.skip(reason)
    pytest.fail(f"{reason}; set {SKIP_VARIABLE}=1 to skip the differential tests", pytrace=False)


def run(script: str, payload: Any, *modules: str) -> Any:
    """Run ``script`` with ``input`` (the payload) and ``lib`` (the modules, by name) bound;
    what it assigns to ``output`` comes back as JSON."""
    require(*modules)
    requires = {m: str(module_path(m)) for m in modules}
    program = (
        "const lib = {};\n"
        f"for (const [k, v] of Object.entries({json.dumps(requires)})) lib[k] = require(v);\n"
        "const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        "let output;\n"
        f"{script}\n"
        "process.stdout.write(JSON.stringify(output));\n"
    )
    done = subprocess.run(
        ["node", "-e", program],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
