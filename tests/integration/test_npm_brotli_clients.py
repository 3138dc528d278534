"""Brotli packuments through real clients that decode them: curl (``--compressed`` sends
``br``) and Node's own fetch (undici, with its brotli decoder), against a running mirror.

npm and pnpm send ``Accept-Encoding: gzip, deflate`` and must stay on gzip; Node's fetch
over plain http sends the same and gets gzip too. yarn Berry (got) sends ``br``: its installs
through the mirror are in ``test_npm_mirror_clients.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import brotli
import httpx
import pytest

from support import jsclients
from support.npmfixture import ABBREVIATED, NpmFixture, running_npm_fixture
from support.servers import Server, running_server

pytestmark = pytest.mark.integration

CORGI_ACCEPT = f"{ABBREVIATED}; q=1.0, application/json; q=0.8, */*"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NpmFixture]:
    if isinstance(npm := jsclients.npm_bin(), jsclients.Missing):  # the fixture packs with npm
        pytest.fail(f"npm is needed for this test: {npm.reason}")
    with running_npm_fixture(tmp_path_factory.mktemp("upstream")) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def mirror(upstream: NpmFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"ENTREPOT_NPM__UPSTREAM": upstream.url + "/"}
    with running_server(tmp_path_factory.mktemp("mirror"), env=env) as server:
        yield server


def curl() -> str:
    """The machine's curl, which must decode brotli (``curl -V`` lists it)."""
    found = shutil.which("curl")
    if found is None:
        pytest.fail("curl is needed for this test (Debian: apt-get install curl)")
    features = subprocess.run([found, "-V"], capture_output=True, text=True, check=True).stdout
    if "brotli" not in features.lower():
        pytest.fail(f"this curl cannot decode brotli:\n{features}")
    return found


def identity(server: Server, name: str, accept: str) -> httpx.Response:
    answer = httpx.get(
        f"{server.url}/npm/{name}",
        headers={"Accept": accept, "Accept-Encoding": "identity"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert "content-encoding" not in answer.headers
    return answer


def curl_get(tmp_path: Path, *args: str) -> tuple[dict[str, str], bytes]:
    """curl's answer: the headers (lower-case names, the status as ``:status``) and the
    body it wrote (decoded with ``--compressed``)."""
    head, out = tmp_path / "headers", tmp_path / "body"
    out.unlink(missing_ok=True)
    subprocess.run([curl(), "-sS", "-D", str(head), "-o", str(out), *args], check=True, timeout=30)
    status, *lines = head.read_text(errors="replace").splitlines()
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
    headers[":status"] = status.split()[1]
    return headers, out.read_bytes() if out.exists() else b""


def test_curl_compressed_gets_brotli_and_decodes_the_same_document(
    mirror: Server, tmp_path: Path
) -> None:
    for name, accept in (("fixture-a", "application/json"), ("@fixture/b", CORGI_ACCEPT)):
        plain = identity(mirror, name, accept)
        url = f"{mirror.url}/npm/{name.replace('/', '%2f')}"
        headers, body = curl_get(tmp_path, "--compressed", "-H", f"Accept: {accept}", url)
        assert headers[":status"] == "200"
        assert headers["content-encoding"] == "br"
        assert headers["vary"] == "Accept, Accept-Encoding"
        assert body == plain.content  # curl decoded it
        assert headers["etag"] != plain.headers["etag"]
        # What went over the wire is brotli itself, under that ETag.
        wire = curl_get(tmp_path, "-H", "Accept-Encoding: br", "-H", f"Accept: {accept}", url)
        assert wire[0]["etag"] == headers["etag"]
        assert brotli.decompress(wire[1]) == plain.content
        # A 304 for the brotli form's ETag, and for the identity's (as for the gzip one's).
        for etag in (headers["etag"], plain.headers["etag"]):
            conditional = ("-H", f"Accept: {accept}", "-H", f"If-None-Match: {etag}", url)
            again, nothing = curl_get(tmp_path, "--compressed", *conditional)
            assert again[":status"] == "304"
            assert again["etag"] == headers["etag"]
            assert nothing == b""


NODE_FETCH = """
const [url, accept, encoding] = process.argv.slice(1);
const headers = { accept };
if (encoding) headers["accept-encoding"] = encoding;
const answer = await fetch(url, { headers });
const body = await answer.text();
console.log(JSON.stringify({
  status: answer.status,
  encoding: answer.headers.get("content-encoding"),
  body,
}));
"""


def node_fetch(url: str, accept: str, encoding: str = "") -> dict[str, object]:
    if isinstance(node := jsclients.node_bin(), jsclients.Missing):
        pytest.fail(f"node is needed for this test: {node.reason}")
    done = subprocess.run(
        [str(node), "--input-type=module", "-e", NODE_FETCH, url, accept, encoding],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_nodes_fetch_decodes_brotli_and_stays_on_gzip_when_it_does_not_ask(
    mirror: Server,
) -> None:
    url = f"{mirror.url}/npm/fixture-a"
    plain = identity(mirror, "fixture-a", CORGI_ACCEPT)
    asked = node_fetch(url, CORGI_ACCEPT, "gzip, deflate, br")
    assert asked["status"] == 200
    assert asked["encoding"] == "br"
    assert asked["body"] == plain.text
    # Over plain http undici sends "gzip, deflate" by itself, as npm and pnpm do: gzip.
    default = node_fetch(url, CORGI_ACCEPT)
    assert default["encoding"] == "gzip"
    assert default["body"] == plain.text
