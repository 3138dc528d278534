"""The real npm, pnpm and yarn (Berry), isolated: one user with an empty home and caches.

    client = JsClient(tmp_path / "user1", registry)      # the fixture's or a mirror's URL
    project = client.new_project({"fixture-a": "^1.0.0"})
    client.run("npm", "install", cwd=project)
    npm_lock(project)["node_modules/fixture-a"].integrity

Nothing of the person running the tests leaks in and nothing of theirs changes: the
environment is built from scratch (no ``npm_config_*``, ``YARN_*``, ``CI`` from outside),
HOME, the npm user and global configs, every cache and store, the global prefix, XDG folders
and TMPDIR live under ``home``. Anything that tried to reach past loopback meets a dead proxy
(127.0.0.1:9) instead of the network. Retries are few and quick, so a test of a failing
registry ends in seconds, not minutes; ``extra_env`` changes any of it.

The same helper drives the fixture registry and, later, the mirror in front of it: only
``registry`` changes (a mirror serves npm under a path prefix, e.g. ``.../npm/``).
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from support.jsclients import Missing, node_bin, npm_bin, pnpm_bin, yarn_bin

Tool = Literal["npm", "pnpm", "yarn"]
LOCKFILES: Mapping[Tool, str] = {
    "npm": "package-lock.json",
    "pnpm": "pnpm-lock.yaml",
    "yarn": "yarn.lock",
}


@dataclass
class JsClient:
    """A user of a registry with nothing cached yet."""

    home: Path
    registry: str  # the registry's base URL, as `npm config set registry` takes it
    extra_env: Mapping[str, str] | None = None
    timeout: float = 120.0  # per command: every test stays bounded

    @property
    def registry_url(self) -> str:
        """With the trailing slash npm and pnpm expect of a registry with a path."""
        return self.registry.rstrip("/") + "/"

    def env(self) -> dict[str, str]:
        home = self.home
        for folder in ("tmp", ".config", ".cache", ".local/share", ".local/state"):
            (home / folder).mkdir(parents=True, exist_ok=True)
        (home / ".npmrc").write_text(f"registry={self.registry_url}\n", encoding="utf-8")
        (home / ".npmrc-global").touch()
        # pnpm's own settings go in its global rc: as npm_config_* variables npm would warn.
        (home / ".config/pnpm").mkdir(exist_ok=True)
        pnpm_rc = f"store-dir={home / 'pnpm-store'}\ncache-dir={home / '.cache/pnpm'}\n"
        (home / ".config/pnpm/rc").write_text(pnpm_rc, encoding="utf-8")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "TMPDIR": str(home / "tmp"),
            "LANG": "C.UTF-8",
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local/share"),
            "XDG_STATE_HOME": str(home / ".local/state"),
            # npm (and pnpm, which reads the same settings)
            "npm_config_userconfig": str(home / ".npmrc"),
            "npm_config_globalconfig": str(home / ".npmrc-global"),
            "npm_config_registry": self.registry_url,
            "npm_config_cache": str(home / ".npm"),
            "npm_config_prefix": str(home / ".npm-global"),
            "npm_config_audit": "false",
            "npm_config_fund": "false",
            "npm_config_update_notifier": "false",
            "npm_config_progress": "false",
            "npm_config_fetch_retries": "1",
            "npm_config_fetch_retry_mintimeout": "200",
            "npm_config_fetch_retry_maxtimeout": "1000",
            "npm_config_fetch_timeout": "60000",
            "PNPM_HOME": str(home / ".local/share/pnpm"),
            # yarn Berry: the project's .yarnrc.yml (new_project) says the rest
            "YARN_GLOBAL_FOLDER": str(home / ".yarn/berry"),
            "YARN_ENABLE_TELEMETRY": "0",
            "YARN_ENABLE_PROGRESS_BARS": "0",
            "COREPACK_ENABLE_NETWORK": "0",
            # Anything that tried to leave the machine would fail here, not go out.
            "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9",
            "NO_PROXY": "127.0.0.1,localhost,::1",
        }
        env.update(self.extra_env or {})
        return env

    def command(self, tool: Tool) -> list[str]:
        """How to start ``tool``; an AssertionError with the reason when it is missing."""
        if tool == "npm":
            found = npm_bin()
            return [str(_present(found))]
        node = _present(node_bin())
        return [str(node), str(_present(pnpm_bin() if tool == "pnpm" else yarn_bin()))]

    def run(
        self,
        tool: Tool,
        *args: str,
        cwd: Path,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.command(tool), *args],
            cwd=cwd,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
            )
        return done

    def node(self, tool: Tool, expression: str, *, cwd: Path) -> Any:
        """``expression`` evaluated by node in the project as ``tool`` installed it (yarn's
        Plug'n'Play needs ``yarn node``), its value read back as JSON."""
        script = f"process.stdout.write(JSON.stringify({expression}))"
        if tool == "yarn":
            done = self.run("yarn", "node", "-e", script, cwd=cwd)
        else:
            done = subprocess.run(
                [str(_present(node_bin())), "-e", script],
                cwd=cwd,
                env=self.env(),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def new_project(
        self,
        dependencies: Mapping[str, str],
        *,
        folder: Path | None = None,
        name: str = "entrepot-test-app",
        yarn: Mapping[str, object] | None = None,
    ) -> Path:
        """A project folder with ``package.json`` and, for yarn Berry, a ``.yarnrc.yml`` that
        points it at the registry (yarn reads no .npmrc); ``yarn`` adds or overrides settings
        (e.g. ``{"npmMinimalAgeGate": 0}``: yarn 4 passes over versions younger than a day)."""
        project = folder or self.home / "project"
        project.mkdir(parents=True, exist_ok=True)
        manifest = {
            "name": name,
            "version": "1.0.0",
            "private": True,
            "dependencies": dict(dependencies),
        }
        (project / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
        settings = yarnrc(self.registry, self.home / "yarn-cache", extra=yarn)
        (project / ".yarnrc.yml").write_text(settings)
        return project


def yarnrc(registry: str, cache: Path, *, extra: Mapping[str, object] | None = None) -> str:
    """Yarn Berry's settings for a plain-HTTP registry on loopback: never immutable (CI=true
    would make it so), no global cache (the cache stays in the test's folder), few retries."""
    host = urllib.parse.urlsplit(registry).hostname or "127.0.0.1"
    settings = {
        "npmRegistryServer": registry.rstrip("/"),
        "unsafeHttpWhitelist": [host],
        "enableImmutableInstalls": False,
        "enableGlobalCache": False,
        "cacheFolder": str(cache),
        "enableTelemetry": False,
        "httpRetry": 1,
        **(extra or {}),
    }
    return yaml.safe_dump(settings, sort_keys=False)


def _present(found: Path | Missing) -> Path:
    if isinstance(found, Missing):
        raise AssertionError(found.reason)
    return found


# ---------------------------------------------------------------------------------------------
# Lockfiles


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    integrity: str | None  # the registry's integrity (npm, pnpm); None where not kept (yarn)
    resolved: str | None = None  # the tarball URL, where the lockfile keeps it


def npm_lock(project: Path) -> dict[str, Locked]:
    """package-lock.json v3, keyed by install path (``node_modules/@fixture/b``)."""
    lock = json.loads((project / "package-lock.json").read_text("utf-8"))
    found = {}
    for path, entry in lock["packages"].items():
        if not path:
            continue
        name = entry.get("name") or path.rsplit("node_modules/", 1)[-1]
        found[path] = Locked(name, entry["version"], entry.get("integrity"), entry.get("resolved"))
    return found


def _split_key(key: str) -> tuple[str, str]:
    """``@scope/name@1.0.0`` (pnpm) or ``@scope/name@npm:1.0.0`` (yarn) → name, version."""
    name, _, version = key.rpartition("@")
    return name, version.removeprefix("npm:")


def pnpm_lock(project: Path) -> dict[str, Locked]:
    """pnpm-lock.yaml (lockfile v9), keyed ``name@version``."""
    lock = yaml.safe_load((project / "pnpm-lock.yaml").read_text("utf-8"))
    found = {}
    for key, entry in (lock.get("packages") or {}).items():
        name, version = _split_key(key)
        resolution = entry.get("resolution") or {}
        found[f"{name}@{version}"] = Locked(
            name, version, resolution.get("integrity"), resolution.get("tarball")
        )
    return found


def yarn_lock(project: Path) -> dict[str, Locked]:
    """yarn.lock (Berry), keyed ``name@version``. Berry keeps a checksum of its own zip, not
    the registry's integrity: ``integrity`` is None."""
    lock = yaml.safe_load((project / "yarn.lock").read_text("utf-8"))
    found = {}
    for key, entry in lock.items():
        if key == "__metadata" or entry.get("linkType") == "soft":
            continue
        name, version = _split_key(entry["resolution"])
        found[f"{name}@{version}"] = Locked(name, version, None, None)
    return found
