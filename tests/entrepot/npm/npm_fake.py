"""A fake upstream npm registry behind httpx.MockTransport, and an NpmService in front of it
(the unit tests' seam: no socket, a clock the test moves)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from entrepot.config import Limits, NpmCache, NpmPolicy, NpmSettings
from entrepot.metrics import Metrics
from entrepot.npm.service import NpmService
from entrepot.npm.upstream import NpmUpstream
from entrepot.storage.filesystem import FilesystemStorage

UPSTREAM = "https://registry.example.com/"
MIRROR = "http://mirror.example/npm/"


def iso(moment: float) -> str:
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Chunks(httpx.AsyncByteStream):
    """A streamed body (``content=`` bytes would be read at once, and the mirror reads the
    raw stream)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.data), 64):
            yield self.data[start : start + 64]


class Registry:
    """A tiny upstream: packuments built from ``releases`` (name → version → published
    epoch), tarballs of made-up bytes, strong ETags with 304, request counts, a gate to hold
    answers, and a status to fail with."""

    def __init__(self, releases: dict[str, dict[str, float]]) -> None:
        self.releases = releases
        self.hits: Counter[str] = Counter()
        self.conditional: Counter[str] = Counter()  # requests that sent If-None-Match
        self.gate: asyncio.Event | None = None
        self.failing: int | None = None
        self.tampered = False
        self.bodies: dict[str, bytes] = {}  # name → a packument answered as it is

    def tarball(self, name: str, version: str) -> bytes:
        return f"tarball of {name}@{version}\n".encode() * 8

    def document(self, name: str) -> bytes:
        versions = {}
        for number in self.releases[name]:
            data = self.tarball(name, number)
            base = name.rsplit("/", 1)[-1]
            versions[number] = {
                "name": name,
                "version": number,
                "dist": {
                    "tarball": f"{UPSTREAM}{name}/-/{base}-{number}.tgz",
                    "shasum": hashlib.sha1(data).hexdigest(),
                    "integrity": "sha512-"
                    + base64.b64encode(hashlib.sha512(data).digest()).decode(),
                },
            }
        published = self.releases[name]
        latest = max(published, key=lambda v: tuple(int(p) for p in v.split(".")))
        doc: dict[str, Any] = {
            "_id": name,
            "name": name,
            "dist-tags": {"latest": latest},
            "versions": versions,
            "time": {
                "created": iso(min(published.values())),
                "modified": iso(max(published.values())),
                **{v: iso(t) for v, t in published.items()},
            },
        }
        return json.dumps(doc).encode()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().partition("?")[0]
        self.hits[path] += 1
        if "if-none-match" in request.headers:
            self.conditional[path] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing is not None:
            return httpx.Response(self.failing, json={"error": "down"})
        if path.startswith("/-/"):  # the registry's own endpoints: ping, search, ...
            return httpx.Response(200, content=b"{}", headers={"content-type": "application/json"})
        if "/-/" in path:
            name, _, file = path.lstrip("/").partition("/-/")
            name = name.replace("%2f", "/")
            for number in self.releases.get(name, {}):
                if file.endswith(f"-{number}.tgz"):
                    data = self.tarball(name, number)
                    if self.tampered:
                        data = data[:-1] + b"?"
                    return httpx.Response(200, stream=Chunks(data))
            return httpx.Response(404, json={"error": "not found"})
        name = path.lstrip("/").replace("%2f", "/")
        if name not in self.releases:
            return httpx.Response(404, json={"error": "Not found"})
        body = self.bodies.get(name) or self.document(name)
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if request.headers.get("if-none-match") == etag:
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(
            200, content=body, headers={"ETag": etag, "Content-Type": "application/json"}
        )

    def packument_hits(self, name: str) -> int:
        return self.hits["/" + name.replace("/", "%2f")]


def make_service(
    tmp_path: Path,
    registry: Registry,
    clock: Clock,
    *,
    cache: NpmCache | None = None,
    policy: NpmPolicy | None = None,
) -> NpmService:
    client = httpx.AsyncClient(transport=httpx.MockTransport(registry.handler))
    settings = NpmSettings(
        upstream=UPSTREAM, cache=cache or NpmCache(), policy=policy or NpmPolicy()
    )
    return NpmService(
        storage=FilesystemStorage(tmp_path / "data"),
        upstream=NpmUpstream(UPSTREAM, client=client),
        settings=settings,
        base_url=MIRROR,
        metrics=Metrics(),
        limits=Limits(),
        clock=clock,
    )


def document(body: bytes | None) -> dict[str, Any]:
    assert body is not None
    parsed: dict[str, Any] = json.loads(body)
    return parsed
