"""``direct``: fetch from version control with the real go command, as Athens and goproxy do.

The go command runs in an isolated environment under ``<data>/.direct`` (its own HOME, GOPATH,
GOMODCACHE and git config) with ``GOPROXY=direct``, so it never reads the server user's Go or
git settings and never asks for a password (``GIT_TERMINAL_PROMPT=0``). Credentials come only
from configured files. The VCS clones stay in that GOMODCACHE, so a second version of the same
module is cheap. A semaphore bounds concurrent go processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from entrepot.config import Credentials, Direct
from entrepot.errors import (
    NotFoundError,
    TooLargeError,
    UpstreamError,
    UpstreamTimeoutError,
)

# Messages of the go command that mean "this does not exist" rather than "something broke".
_NOT_FOUND = re.compile(
    r"not found|unknown revision|no matching versions|invalid version|repository .* not found"
    r"|does not contain|no such (repository|revision)|404|410 Gone|unrecognized import path"
    r"|disabled by GOPRIVATE|module .* found .* but does not contain|invalid pseudo-version",
    re.IGNORECASE,
)


# The go command hides git's "Authentication failed" behind these.
_AUTH = re.compile(
    r"no secure protocol found|terminal prompts disabled|authentication failed|could not read"
    r" Username|permission denied",
    re.IGNORECASE,
)


def classify_go_error(stderr: str, what: str) -> UpstreamError | NotFoundError:
    """Turn the go command's complaint into a not-found or an upstream failure."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    detail = " | ".join(lines[-3:])[:400] or "the go command failed without a message"
    if _NOT_FOUND.search(detail):
        return NotFoundError(f"{what}: not found via direct: {detail}")
    if _AUTH.search(detail):
        detail += (
            " (the repository may need credentials: check go.credentials of the mirror, or"
            " go.direct.insecure for plain-http servers)"
        )
    return UpstreamError(f"{what}: direct fetch failed: {detail}")


def build_env(
    *, home: Path, settings: Direct, credentials: Credentials, base: Mapping[str, str]
) -> dict[str, str]:
    """The go command's whole environment: nothing leaks in from the server's own settings."""
    gopath = home / "gopath"
    env = {
        "PATH": base.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "GOPATH": str(gopath),
        "GOMODCACHE": str(gopath / "pkg" / "mod"),
        "GOCACHE": str(home / "gocache"),
        "GOENV": "off",
        "GOPROXY": "direct",
        "GOSUMDB": "off",
        "GOFLAGS": "-mod=mod",
        "GOTOOLCHAIN": "local",
        "GO111MODULE": "on",
        "GOINSECURE": settings.insecure,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(home / "gitconfig"),
        "GCM_INTERACTIVE": "never",
    }
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        if name in base:
            env[name] = base[name]
    if credentials.netrc_file is not None:
        env["NETRC"] = str(credentials.netrc_file)
    env.update(settings.env)
    return env


def _config_value(text: str) -> str:
    """A git config value in double quotes, so spaces, ``#`` and ``;`` survive."""
    for char, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\t", "\\t")):
        text = text.replace(char, escaped)
    return f'"{text}"'


def git_config_text(credentials: Credentials) -> str:
    lines = ["# written by entrepot: the git config of direct fetches"]
    if credentials.git_credentials_file is not None:
        # Read-only use of the store: git's own "store" helper would rewrite the operator's
        # file after each successful fetch (credential approve) and delete the entry after a
        # 401 (credential reject). Only "get" reaches it here.
        store = shlex.quote(str(credentials.git_credentials_file))
        helper = (
            f'!f() {{ if test "$1" = get; then git credential-store --file={store} get; fi; }}; f'
        )
        lines += ["[credential]", f"\thelper = {_config_value(helper)}"]
    if credentials.git_config_file is not None:
        lines += ["[include]", f"\tpath = {_config_value(str(credentials.git_config_file))}"]
    return "\n".join(lines) + "\n"


class DirectUpstream:
    name = "direct"

    def __init__(
        self,
        *,
        home: Path,
        settings: Direct,
        credentials: Credentials,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.home = home
        self.settings = settings
        home.mkdir(parents=True, exist_ok=True)
        (home / "work").mkdir(exist_ok=True)
        (home / "gitconfig").write_text(git_config_text(credentials))
        if credentials.netrc_file is not None:
            # git reads ~/.netrc; the go command reads $NETRC.
            with contextlib.suppress(OSError):
                shutil.copyfile(credentials.netrc_file, home / ".netrc")
                os.chmod(home / ".netrc", 0o600)
        self.env = build_env(
            home=home,
            settings=settings,
            credentials=credentials,
            base=os.environ if environ is None else environ,
        )
        self._gate = asyncio.Semaphore(settings.concurrency)

    async def _go(self, args: list[str], what: str) -> dict[str, Any]:
        """Run ``go <args>`` (with -json) and return the JSON it prints."""
        async with self._gate:
            try:
                proc = await asyncio.create_subprocess_exec(
                    self.settings.go_binary,
                    *args,
                    cwd=self.home / "work",
                    env=self.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as e:
                raise UpstreamError(f"{what}: cannot run the go command: {e.strerror}") from e
            try:
                out, err = await asyncio.wait_for(proc.communicate(), self.settings.timeout)
            except TimeoutError as e:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
                raise UpstreamTimeoutError(
                    f"{what}: direct fetch took longer than {self.settings.timeout:.0f}s"
                ) from e
            finally:
                if proc.returncode is None:  # cancelled: do not leave the go command behind
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
        stderr = err.decode("utf-8", "replace")
        try:
            data = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            data = {}
        message = data.get("Error") if isinstance(data, dict) else None
        if isinstance(message, dict):  # go list -m -json puts {"Err": "..."} there
            message = message.get("Err")
        if proc.returncode != 0 or message:
            raise classify_go_error(f"{stderr}\n{message or ''}", what)
        if not isinstance(data, dict):
            raise UpstreamError(f"{what}: the go command printed unexpected output")
        return data

    async def list(self, module: str) -> bytes:
        data = await self._go(["list", "-m", "-versions", "-json", f"{module}@latest"], module)
        versions = data.get("Versions") or []
        return "".join(f"{v}\n" for v in versions).encode()

    async def info(self, module: str, query: str) -> bytes:
        what = f"{module}@{query}"
        data = await self._go(["list", "-m", "-json", what], what)
        return _info_json(data)

    async def latest(self, module: str) -> bytes:
        return await self.info(module, "latest")

    async def _download(self, module: str, version: str) -> dict[str, Any]:
        what = f"{module}@{version}"
        return await self._go(["mod", "download", "-json", what], what)

    async def mod(self, module: str, version: str) -> bytes:
        data = await self._download(module, version)
        try:
            return await asyncio.to_thread(Path(data["GoMod"]).read_bytes)
        except (KeyError, OSError) as e:
            raise UpstreamError(f"{module}@{version}: the go command gave no go.mod") from e

    async def zip(self, module: str, version: str, dest: Path, *, max_bytes: int) -> None:
        data = await self._download(module, version)
        try:
            src = Path(data["Zip"])
            if os.stat(src).st_size > max_bytes:
                raise TooLargeError(f"zip for {module}@{version} is over {max_bytes} bytes")
            await asyncio.to_thread(shutil.copyfile, src, dest)
        except (KeyError, OSError) as e:
            raise UpstreamError(f"{module}@{version}: the go command gave no zip") from e


def _info_json(data: Mapping[str, Any]) -> bytes:
    info: dict[str, Any] = {"Version": data.get("Version"), "Time": data.get("Time")}
    if data.get("Origin"):
        info["Origin"] = data["Origin"]
    if not info["Version"]:
        raise UpstreamError("the go command gave no version")
    return json.dumps(info).encode()
