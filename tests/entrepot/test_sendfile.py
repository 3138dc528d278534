"""Zip answers through the kernel's sendfile on uvloop: whole, ranged, to a slow reader, and
to a client that goes away, without leaking a descriptor."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from pathlib import Path

import pytest
import uvloop
from aiohttp import web

from entrepot.web.responses import BlobFileResponse

SIZE = 8 << 20  # more than a socket buffer holds: the EAGAIN path runs


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _serve_and(tmp_path: Path, client: object) -> dict[str, object]:
    """Run a one-route server on uvloop and ``client(port)`` against it; return what the
    handler saw."""
    path = tmp_path / "blob.zip"
    path.write_bytes(os.urandom(SIZE))
    seen: dict[str, object] = {"sha": hashlib.sha256(path.read_bytes()).hexdigest()}

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = BlobFileResponse(path, size=SIZE, headers={"Content-Type": "application/zip"})
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionError as e:
            seen["error"] = type(e).__name__
        return response

    async def main() -> None:
        runner = web.ServerRunner(web.Server(handler), handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        seen["fds_before"] = _fds()
        await client(port, seen)  # type: ignore[operator]
        await asyncio.sleep(0.2)
        seen["fds_after"] = _fds()
        await runner.cleanup()

    uvloop.run(main())
    return seen


async def _get(port: int, *, extra: bytes = b"", read_slowly: bool = False) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + extra + b"\r\n")
    await writer.drain()
    data = b""
    while chunk := await reader.read(1 << 16):
        data += chunk
        if read_slowly and len(data) < (1 << 20):
            await asyncio.sleep(0.01)
    writer.close()
    return data


def test_whole_ranged_and_slow_reads_get_exact_bytes(tmp_path: Path) -> None:
    async def client(port: int, seen: dict[str, object]) -> None:
        whole = await _get(port, read_slowly=True)
        head, _, body = whole.partition(b"\r\n\r\n")
        seen["status"], seen["body_sha"] = head.split()[1], hashlib.sha256(body).hexdigest()
        ranged = await _get(port, extra=b"Range: bytes=1000-1999\r\n")
        head, _, body = ranged.partition(b"\r\n\r\n")
        seen["range_status"], seen["range_len"] = head.split()[1], len(body)

    seen = _serve_and(tmp_path, client)
    assert seen["status"] == b"200"
    assert seen["body_sha"] == seen["sha"]
    assert seen["range_status"] == b"206"
    assert seen["range_len"] == 1000
    assert "error" not in seen
    assert seen["fds_after"] == seen["fds_before"]


def test_a_client_that_goes_away_ends_the_send_without_a_leak(tmp_path: Path) -> None:
    async def client(port: int, seen: dict[str, object]) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.1)
        sock.recv(1024)
        # Close with unread data: the server's next write gets a reset.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        for _ in range(50):
            if "error" in seen:
                break
            await asyncio.sleep(0.05)

    seen = _serve_and(tmp_path, client)
    assert seen.get("error") in {"ConnectionResetError", "BrokenPipeError"}
    assert seen["fds_after"] == seen["fds_before"]


@pytest.mark.parametrize("size", [0, 1])
def test_tiny_files(tmp_path: Path, size: int) -> None:
    path = tmp_path / "tiny"
    path.write_bytes(b"x" * size)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        response = BlobFileResponse(path, size=size, headers={})
        await response.prepare(request)
        await response.write_eof()
        return response

    async def main() -> bytes:
        runner = web.ServerRunner(web.Server(handler), handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        data = await _get(runner.addresses[0][1])
        await runner.cleanup()
        return data

    assert uvloop.run(main()).partition(b"\r\n\r\n")[2] == b"x" * size
