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
import math
import os
import re
import shlex
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from entrepot.config import Credentials, Direct, GoSettings
from entrepot.errors import (
    NotFoundError,
    TooLargeError,
    UnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)

# The main module of the go command's working directory. ``go 1.21``: any toolchain that can
# fetch modules at all (GOTOOLCHAIN=local) accepts it, and it never asks for a newer one.
WORK_GO_MOD = "module entrepot.invalid/direct-work\n\ngo 1.21\n"

# Messages of the go command that mean "this does not exist" rather than "something broke".
_NOT_FOUND = re.compile(
    r"not found|unknown revision|no matching versions|invalid version|repository .* not found"
    r"|does not contain|no such (repository|revision)|404|410 Gone|unrecognized import path"
    r"|disabled by GOPRIVATE|module .* found .* but does not contain|invalid pseudo-version",
    re.IGNORECASE,
)


# A transfer that was killed, timed out or broke off: a failure, never "not found", whatever
# else the message says ("unrecognized import path ...: i/o timeout"; a URL with "404").
# Refused or unresolvable hosts stay as before: the go command probes path prefixes that
# often have no server at all, and needs "not found" for them.
_BROKEN = re.compile(
    r"signal: (killed|terminated|interrupt)|operation too slow|timed out|timeout"
    r"|RPC failed|early EOF|unexpected disconnect|transfer closed",
    re.IGNORECASE,
)
_SLOW = re.compile(r"operation too slow|timed out|timeout", re.IGNORECASE)

# user:password@ in a URL git or the go command quoted.
_URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)

# The go command hides git's "Authentication failed" behind these.
_AUTH = re.compile(
    r"no secure protocol found|terminal prompts disabled|authentication failed|could not read"
    r" Username|permission denied",
    re.IGNORECASE,
)


def classify_go_error(
    stderr: str, what: str, *, returncode: int = 1
) -> UpstreamError | NotFoundError:
    """Turn the go command's complaint into a not-found or an upstream failure.

    Only a clean "does not exist" is a not-found (which the client may take as final, and the
    mirror remembers): a go command killed by a signal (``returncode`` < 0) or a transfer that
    broke or timed out is a failure, whatever else its message says.
    """
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    detail = " | ".join(lines[-3:])[:400] or "the go command failed without a message"
    detail = _URL_USERINFO.sub(r"\1", detail)
    if returncode < 0:
        name = _signal_name(-returncode)
        return UpstreamError(f"{what}: direct fetch failed: the go command was killed ({name})")
    if broken := _BROKEN.search(detail):
        error = UpstreamTimeoutError if _SLOW.search(broken.group(0)) else UpstreamError
        return error(f"{what}: direct fetch failed: {detail}")
    if _NOT_FOUND.search(detail):
        return NotFoundError(f"{what}: not found via direct: {detail}")
    if _AUTH.search(detail):
        detail += (
            " (the repository may need credentials: check go.credentials of the mirror, or"
            " go.direct.insecure for plain-http servers)"
        )
    return UpstreamError(f"{what}: direct fetch failed: {detail}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def build_env(
    *,
    home: Path,
    settings: Direct,
    credentials: Credentials,
    base: Mapping[str, str],
    min_transfer_rate: int = 0,
    min_rate_window: float = 30.0,
) -> dict[str, str]:
    """The go command's whole environment: nothing leaks in from the server's own settings.

    With ``min_transfer_rate`` > 0, git (libcurl) drops an http(s) transfer that averages
    fewer bytes per second than that over ``min_rate_window``: a trickling remote would
    otherwise hold a slot until ``timeout``.
    """
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
        "GOWORK": "off",
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
    if min_transfer_rate > 0:
        env["GIT_HTTP_LOW_SPEED_LIMIT"] = str(min_transfer_rate)
        env["GIT_HTTP_LOW_SPEED_TIME"] = str(max(1, math.ceil(min_rate_window)))
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


def _write_atomically(path: Path, text: str) -> None:
    """Workers start together and a go command may be reading the file: never a torn one."""
    fd, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(staged, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise


class Slots:
    """``size`` slots, at most ``queue`` callers waiting for one, each for at most ``timeout``.

    A caller past the queue, or one that waited too long, gets :class:`UnavailableError` (503
    with Retry-After): the go command retries, or tries its next GOPROXY entry, instead of
    waiting behind stalled repositories. A freed slot goes to the longest waiter.
    """

    def __init__(self, *, size: int, queue: int, timeout: float) -> None:
        self.free = size
        self.queue = queue
        self.timeout = timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def slot(self, what: str) -> AsyncIterator[None]:
        await self._acquire(what)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, what: str) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        if len(self._waiters) >= self.queue:
            raise UnavailableError(
                f"{what}: the direct fetch queue is full (go.direct.queue); retry shortly"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait([waiter], timeout=self.timeout)
        except BaseException:  # cancelled: give back a slot handed over meanwhile
            if waiter.done() and not waiter.cancelled():
                self._release()
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)
        if waiter.cancelled():
            raise UnavailableError(
                f"{what}: no direct fetch slot within {self.timeout:g}s"
                " (go.direct.queue_timeout); retry shortly"
            )

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class DirectUpstream:
    name = "direct"

    def __init__(
        self,
        *,
        home: Path,
        settings: Direct,
        credentials: Credentials,
        environ: Mapping[str, str] | None = None,
        min_transfer_rate: int = GoSettings.model_fields["min_transfer_rate"].default,
        min_rate_window: float = GoSettings.model_fields["min_rate_window"].default,
    ) -> None:
        self.home = home
        self.settings = settings
        home.mkdir(parents=True, exist_ok=True)
        (home / "work").mkdir(exist_ok=True)
        _write_atomically(home / "work" / "go.mod", WORK_GO_MOD)
        _write_atomically(home / "gitconfig", git_config_text(credentials))
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
            min_transfer_rate=min_transfer_rate,
            min_rate_window=min_rate_window,
        )
        self.slots = Slots(
            size=settings.concurrency, queue=settings.queue, timeout=settings.queue_timeout
        )

    async def _go(self, args: list[str], what: str) -> dict[str, Any]:
        """Run ``go <args>`` (with -json) and return the JSON it prints."""
        async with self.slots.slot(what):
            out, err, returncode = await self._run(args, what)
        stderr = err.decode("utf-8", "replace")
        try:
            data = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            data = {}
        message = data.get("Error") if isinstance(data, dict) else None
        if isinstance(message, dict):  # go list -m -json puts {"Err": "..."} there
            message = message.get("Err")
        if returncode != 0 or message:
            raise classify_go_error(f"{stderr}\n{message or ''}", what, returncode=returncode)
        if not isinstance(data, dict):
            raise UpstreamError(f"{what}: the go command printed unexpected output")
        return data

    async def _run(self, args: list[str], what: str) -> tuple[bytes, bytes, int]:
        """The go command in a session of its own; the whole group is killed on a timeout or
        a cancel, and any straggler (a git that outlived it) when it ends."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self.settings.go_binary,
                *args,
                cwd=self.home / "work",
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as e:
            raise UpstreamError(f"{what}: cannot run the go command: {e.strerror}") from e
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.settings.timeout)
        except TimeoutError as e:
            _kill_group(proc.pid)
            await proc.wait()
            raise UpstreamTimeoutError(
                f"{what}: direct fetch took longer than {self.settings.timeout:g}s"
                " (go.direct.timeout)"
            ) from e
        finally:
            # Cancelled, timed out or done: no process of the group may outlive the fetch (a
            # go killed from outside leaves its git running). While a member lives the group
            # id is ours; once none does, the id is free and killpg finds no group.
            _kill_group(proc.pid)
        assert proc.returncode is not None
        return out, err, proc.returncode

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


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _info_json(data: Mapping[str, Any]) -> bytes:
    info: dict[str, Any] = {"Version": data.get("Version"), "Time": data.get("Time")}
    if data.get("Origin"):
        info["Origin"] = data["Origin"]
    if not info["Version"]:
        raise UpstreamError("the go command gave no version")
    return json.dumps(info).encode()
