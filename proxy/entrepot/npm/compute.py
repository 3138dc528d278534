"""Where packument documents are computed: a thread for small ones, a short-lived process for
large ones, so that a serving worker's memory stays what serving needs.

Parsing a 14 MB packument makes millions of small Python objects; once freed, CPython's
allocator and malloc keep most of that memory (measured: a worker stayed at 245 MiB after
one such compute, +110 MiB even after ``malloc_trim``). A process of its own
(``python -m entrepot.npm.compute``), started for one compute and gone after it, returns
everything to the system. Its input and output are files, not bytes through a pipe: the
upstream's packument is streamed to a staged file, the process reads it and writes the six
documents (full and abbreviated, each plain, gzip and brotli) to staged files of their own,
and only the small index comes back (a 20 MB packument pickled to a pool and back cost the
worker ~90 MB of copies its allocator kept). A plain child process, not a
``multiprocessing`` pool: no idle interpreter or resource tracker is left behind, and a
compute that overruns :attr:`Computer.timeout` is killed. The cost, ~0.2 s to start an
interpreter, is paid once per upstream change of a large package, never per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from entrepot.errors import EntrepotError, InvalidRequestError, UnavailableError
from entrepot.npm.packument import (
    Documents,
    Index,
    PackumentError,
    PackumentTooLargeError,
    Policy,
    Representation,
    compute,
)

IN_PROCESS_BYTES = 2 << 20
"""Upstream packuments up to this size are computed in a thread of the worker."""
TIMEOUT = 120.0
"""Seconds a helper process may compute (a 20 MB packument takes ~2 s): then it is killed."""

Body = bytes | Path
"""A document's bytes, or the staged file that holds them."""

_ERRORS: dict[str, type[EntrepotError]] = {
    "PackumentTooLargeError": PackumentTooLargeError,
    "PackumentError": PackumentError,
    "InvalidRequestError": InvalidRequestError,
}
"""The errors a compute raises, raised again as they are when they come from the helper."""


@dataclass(frozen=True, eq=False)
class Computed:
    """What publishing a package's documents needs: its index, and the six bodies (in
    memory, or in the staged files the caller gave)."""

    index: Index
    bodies: Mapping[Representation, Body]

    @classmethod
    def of(cls, docs: Documents) -> Computed:
        """Documents made elsewhere (in memory), as published."""
        return cls(docs.index, bodies_of(docs))

    @property
    def too_new(self) -> bool:
        """Some version is hidden until it is old enough (computed again then)."""
        return "too-new" in self.index.hidden.values()


def bodies_of(docs: Documents) -> dict[Representation, bytes]:
    return {
        "full": docs.full.body,
        "full.gz": docs.full.gzip,
        "full.br": docs.full.br,
        "abbreviated": docs.abbreviated.body,
        "abbreviated.gz": docs.abbreviated.gzip,
        "abbreviated.br": docs.abbreviated.br,
    }


def _in_memory(source: Body, **kwargs: object) -> Computed:
    raw = source.read_bytes() if isinstance(source, Path) else source
    docs = compute(raw, **kwargs)  # type: ignore[arg-type]
    return Computed(docs.index, bodies_of(docs))


def source_size(source: Body) -> int:
    return source.stat().st_size if isinstance(source, Path) else len(source)


class Computer:
    """Computes documents; one per worker, one large compute at a time."""

    def __init__(
        self, *, in_process_bytes: int = IN_PROCESS_BYTES, timeout: float = TIMEOUT
    ) -> None:
        self.in_process_bytes = in_process_bytes
        self.timeout = timeout
        self._lock = asyncio.Lock()

    def in_process(self, size: int) -> bool:
        return size <= self.in_process_bytes

    async def documents(
        self,
        source: Body,
        outs: Mapping[Representation, Path],
        *,
        name: str,
        base_url: str,
        now: float,
        max_bytes: int,
        policy: Policy | None,
    ) -> Computed:
        """The documents of ``source`` (bytes, or a file). Small ones are computed in a thread
        and kept in memory; large ones by a helper process that writes them to ``outs``.

        Raises what :func:`~entrepot.npm.packument.compute` raises, and UnavailableError
        when the helper died or overran :attr:`timeout`."""
        if self.in_process(source_size(source)):
            work = functools.partial(
                _in_memory,
                source,
                name=name,
                base_url=base_url,
                now=now,
                max_bytes=max_bytes,
                policy=policy,
            )
            return await asyncio.to_thread(work)
        policy = policy or Policy()
        job = {
            "source": str(source) if isinstance(source, Path) else None,
            "outs": {rep: str(path) for rep, path in outs.items()},
            "name": name,
            "base_url": base_url,
            "now": now,
            "max_bytes": max_bytes,
            "policy": [policy.min_release_age, sorted(policy.blocked_versions)],
        }
        stdin = json.dumps(job).encode() + b"\n" + (b"" if isinstance(source, Path) else source)
        # One at a time per worker: each costs a few hundred MB while it runs.
        async with self._lock:
            out = await self._run(name, stdin)
        status, _, rest = out.partition(b"\n")
        if status == b"ok":
            return Computed(Index.from_bytes(rest), dict(outs))
        error = json.loads(rest)
        raise _ERRORS.get(error["type"], UnavailableError)(error["message"])

    async def _run(self, name: str, stdin: bytes) -> bytes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "entrepot.npm.compute",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate(stdin)
        except TimeoutError:
            raise UnavailableError(
                f"{name}: computing its documents took over {self.timeout:.0f} s (the helper"
                " process was stopped); retry shortly"
            ) from None
        finally:
            if proc.returncode is None:  # timed out, or the request was cancelled
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.returncode != 0 or not out.startswith((b"ok\n", b"error\n")):
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise UnavailableError(
                f"{name}: computing its documents failed (the helper process exited with"
                f" {proc.returncode}: {tail[0]}; out of memory?); retry shortly"
            )
        return out


def _main() -> int:
    """The helper: a job (JSON) on the first line of stdin, the packument's bytes after it
    unless the job names its file; ``ok`` and the index, or ``error`` and the error, out."""
    stdin = sys.stdin.buffer
    job = json.loads(stdin.readline())
    source: Body = Path(job["source"]) if job["source"] else stdin.read()
    age, blocked = job["policy"]
    try:
        raw = source.read_bytes() if isinstance(source, Path) else source
        del source
        docs = compute(
            raw,
            name=job["name"],
            base_url=job["base_url"],
            now=job["now"],
            max_bytes=job["max_bytes"],
            policy=Policy(min_release_age=age, blocked_versions=frozenset(blocked)),
        )
        del raw
        for rep, body in bodies_of(docs).items():
            Path(job["outs"][rep]).write_bytes(body)
    except EntrepotError as e:
        error = {"type": type(e).__name__, "message": str(e)}
        sys.stdout.buffer.write(b"error\n" + json.dumps(error).encode())
        return 0
    sys.stdout.buffer.write(b"ok\n" + docs.index.to_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(_main())
