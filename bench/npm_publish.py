"""Publishing to the private registry: how long one publish takes, and whether it grows with
the package's version count.

Issue 13 asks for a publish of a 1 MB tarball under 50 ms p50 on SQLite, and for 100
sequential publishes of versions of one package not to slow down as the count grows. This
drives :class:`entrepot.npm.registry.RegistryEndpoints` in process (no HTTP: the server core
adds the same constant to every request) on a real data folder with fsync on and the SQLite
store, exactly as ``entrepot serve`` builds them: parse and check the body (base64, sha512,
sha1), write the tarball, the store's transaction, the documents rebuilt from the store and
computed by the mirror's ``compute``, the index written.

Not a test: ``.venv/bin/python bench/npm_publish.py [--versions 100] [--size 1048576]``; no
network. Do not run it while the test suite loads the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "proxy"))

from entrepot.config import Limits, NpmSettings  # noqa: E402
from entrepot.metrics import Metrics  # noqa: E402
from entrepot.npm.auth import masked, new_token, token_key  # noqa: E402
from entrepot.npm.registry import RegistryEndpoints  # noqa: E402
from entrepot.npm.registry_auth import Authenticator  # noqa: E402
from entrepot.npm.registrystore import open_registry_store  # noqa: E402
from entrepot.npm.service import NpmService  # noqa: E402
from entrepot.sql.migrate import migrate  # noqa: E402
from entrepot.storage.filesystem import FilesystemStorage  # noqa: E402
from entrepot.web.http import Request  # noqa: E402

NAME = "@bench/pkg"


def body(version: str, size: int) -> bytes:
    data = hashlib.shake_256(version.encode()).digest(size)
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    manifest = {
        "name": NAME,
        "version": version,
        "description": "a package for the publish benchmark",
        "dependencies": {"left-pad": "^1.0.0", "@bench/other": "^2.1.0"},
        "scripts": {"test": "node test.js"},
        "dist": {"integrity": integrity, "shasum": hashlib.sha1(data).hexdigest()},
    }
    return json.dumps(
        {
            "_id": NAME,
            "name": NAME,
            "dist-tags": {"latest": version},
            "versions": {version: manifest},
            "readme": "# pkg\n" + "Some words about it. " * 100,
            "_attachments": {
                f"pkg-{version}.tgz": {
                    "data": base64.b64encode(data).decode(),
                    "length": len(data),
                }
            },
        }
    ).encode()


async def run(data: Path, versions: int, size: int) -> list[float]:
    store = open_registry_store(None, data)
    settings = NpmSettings(upstream="http://127.0.0.1:9/")
    storage = FilesystemStorage(data)
    service = NpmService(
        storage=storage,
        upstream=None,
        settings=settings,
        base_url="http://127.0.0.1:8080/npm/",
        metrics=Metrics(),
        limits=Limits(),
    )
    auth = Authenticator(store, settings.registry)
    registry = RegistryEndpoints(store, auth, service, storage, settings)
    now = datetime.now(UTC)
    await store.create_user("bench", email="b@x.test", password_hash="-", now=now)
    token = new_token()
    await store.create_token(
        token_key(token), user="bench", prefix=masked(token), readonly=False, cidrs=[], now=now
    )
    bodies = [body(f"1.0.{i}", size) for i in range(versions)]
    times: list[float] = []
    for payload in bodies:
        request = Request("PUT", f"/npm/{NAME}", {"authorization": f"Bearer {token}"}, body=payload)
        start = time.perf_counter()
        answer = await registry.write(request, "/@bench%2fpkg")
        times.append(time.perf_counter() - start)
        if answer is None or answer.status != 201:
            raise SystemExit(f"publish refused: {answer}")
    await store.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=100)
    parser.add_argument("--size", type=int, default=1 << 20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / "bench") as folder:
        data = Path(folder)
        migrate(None, data)
        times = asyncio.run(run(data, args.versions, args.size))
    ms = [t * 1000 for t in times]
    tenth = max(1, len(ms) // 10)
    print(f"{args.versions} sequential publishes of {args.size} B tarballs (SQLite, fsync on)")
    print(f"  p50 {statistics.median(ms):.1f} ms, p90 {sorted(ms)[int(len(ms) * 0.9)]:.1f} ms")
    print(f"  first {tenth}: median {statistics.median(ms[:tenth]):.1f} ms")
    print(f"  last {tenth}: median {statistics.median(ms[-tenth:]):.1f} ms")


if __name__ == "__main__":
    main()
