"""Where packument documents are computed: a thread for small ones, a short-lived process for
large ones, so that a serving worker's memory stays what serving needs.

Parsing a 14 MB packument makes millions of small Python objects; once freed, CPython's
allocator and malloc keep most of that memory (measured: a worker stayed at 245 MiB after
one such compute, +110 MiB even after ``malloc_trim``). A process of its own, started for
one compute and gone after it, returns everything to the system: the worker receives only
the resulting bytes. The cost, ~0.2 s to start an interpreter, is paid once per upstream
change of a large package, never per request.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from entrepot.errors import UnavailableError
from entrepot.npm.packument import Documents, Policy, compute

IN_PROCESS_BYTES = 2 << 20
"""Upstream packuments up to this size are computed in a thread of the worker."""


class Computer:
    """Computes documents; one per worker (its process pool is made on first use)."""

    def __init__(self, *, in_process_bytes: int = IN_PROCESS_BYTES) -> None:
        self.in_process_bytes = in_process_bytes
        self._pool: ProcessPoolExecutor | None = None
        self._lock = asyncio.Lock()

    async def documents(
        self,
        raw: bytes,
        *,
        name: str,
        base_url: str,
        now: float,
        max_bytes: int,
        policy: Policy | None,
    ) -> Documents:
        work = functools.partial(
            compute, raw, name=name, base_url=base_url, now=now, max_bytes=max_bytes, policy=policy
        )
        if len(raw) <= self.in_process_bytes:
            return await asyncio.to_thread(work)
        # One large compute at a time per worker: each costs a few hundred MB while it runs.
        async with self._lock:
            pool = self._pool
            if pool is None:
                pool = self._pool = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context("spawn"),
                    max_tasks_per_child=1,
                )
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, work)
            except BrokenProcessPool as e:  # killed (out of memory?): a fresh pool next time
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
                raise UnavailableError(
                    f"{name}: computing its documents failed (the helper process died:"
                    " out of memory?); retry shortly"
                ) from e

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
