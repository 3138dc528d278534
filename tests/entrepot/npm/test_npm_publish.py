"""The pure rules of registry writes (entrepot.npm.publish), with bodies shaped as the npm CLI
sends them, and one body captured from the real `npm publish`."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from entrepot.errors import InvalidRequestError
from entrepot.npm.integrity import integrity_of
from entrepot.npm.publish import (
    Update,
    check_tag_name,
    parse_publish,
    parse_rev,
    parse_tag_value,
    parse_update,
)

TARBALL = b"\x1f\x8b" + b"not really a tarball, but bytes all the same" * 40
LIMIT = 1 << 20


def body(
    name: str = "@corp/tool",
    version: str = "1.2.0",
    *,
    data: bytes = TARBALL,
    tags: dict[str, str] | None = None,
    dist: dict[str, Any] | None = None,
    filename: str | None = None,
    **extra: Any,
) -> bytes:
    """What libnpmpublish sends: the version, its dist with the client's digests, the tags,
    and the tarball in base64."""
    base = name.rsplit("/", 1)[-1]
    manifest = {
        "name": name,
        "version": version,
        "description": "a tool",
        "dist": dist
        if dist is not None
        else {
            "integrity": integrity_of(data),
            "shasum": hashlib.sha1(data).hexdigest(),
            "tarball": f"http://anywhere.example.com/{name}/-/{base}-{version}.tgz",
        },
    }
    doc = {
        "_id": name,
        "name": name,
        "description": "a tool",
        "dist-tags": tags if tags is not None else {"latest": version},
        "versions": {version: manifest},
        "access": None,
        "_attachments": {
            filename or f"{name}-{version}.tgz": {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(data).decode(),
                "length": len(data),
            }
        },
        **extra,
    }
    return json.dumps(doc).encode()


def test_a_publish_is_read_and_its_digests_computed_by_the_server() -> None:
    got = parse_publish(body(), name="@corp/tool", max_tarball_bytes=LIMIT)
    assert (got.name, got.version, got.tags) == ("@corp/tool", "1.2.0", {"latest": "1.2.0"})
    assert got.tarball == TARBALL
    assert got.integrity == integrity_of(TARBALL)
    assert got.shasum == hashlib.sha1(TARBALL).hexdigest()
    assert got.manifest["dist"]["integrity"] == got.integrity
    assert got.manifest["description"] == "a tool"


def test_a_publish_with_a_tag_points_only_that_tag() -> None:
    got = parse_publish(
        body(version="2.0.0-beta.1", tags={"beta": "2.0.0-beta.1"}),
        name="@corp/tool",
        max_tarball_bytes=LIMIT,
    )
    assert got.tags == {"beta": "2.0.0-beta.1"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: body(data=TARBALL, dist={"integrity": integrity_of(b"other")}), "changed"),
        (lambda: body(dist={"shasum": hashlib.sha1(b"other").hexdigest()}), "changed"),
        (
            lambda: body(
                dist={"integrity": integrity_of(TARBALL), "shasum": "0" * 40},
            ),
            "sha1",
        ),
        (lambda: body(version="1.2"), "invalid version"),
        (lambda: body(name="@other/tool"), "_id"),
        (lambda: body(tags={"latest": "0.9.0"}), "only tag the version"),
        (lambda: body(tags={"1.x": "1.2.0"}), "version range"),
        (lambda: body(filename="evil.tgz"), "expected 'tool-1.2.0.tgz'"),
        (lambda: b"[]", "not a JSON object"),
        (lambda: b"{", "not JSON"),
        (lambda: body(data=b"x" * (LIMIT + 1)), "larger than"),
    ],
)
def test_a_bad_publish_is_refused_with_the_reason(make: Any, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        parse_publish(make(), name="@corp/tool", max_tarball_bytes=LIMIT)


def test_two_versions_or_two_attachments_are_refused() -> None:
    doc = json.loads(body())
    doc["versions"]["1.3.0"] = doc["versions"]["1.2.0"]
    with pytest.raises(InvalidRequestError, match="exactly one version"):
        parse_publish(json.dumps(doc).encode(), name="@corp/tool", max_tarball_bytes=LIMIT)
    doc = json.loads(body())
    doc["_attachments"]["x.tgz"] = doc["_attachments"]["@corp/tool-1.2.0.tgz"]
    with pytest.raises(InvalidRequestError, match="exactly one tarball"):
        parse_publish(json.dumps(doc).encode(), name="@corp/tool", max_tarball_bytes=LIMIT)


def test_a_length_that_disagrees_with_the_data_is_refused() -> None:
    doc = json.loads(body())
    doc["_attachments"]["@corp/tool-1.2.0.tgz"]["length"] = 3
    with pytest.raises(InvalidRequestError, match="'length' says 3"):
        parse_publish(json.dumps(doc).encode(), name="@corp/tool", max_tarball_bytes=LIMIT)


def test_updates_are_the_difference_from_what_is_stored() -> None:
    stored = {"1.0.0": "", "1.1.0": "", "2.0.0": "old"}
    people = (("ann", "ann@example.com"),)
    doc = {
        "_id": "tool",
        "name": "tool",
        "versions": {
            "1.0.0": {"deprecated": "use 2"},
            "1.1.0": {},
            "2.0.0": {"deprecated": ""},
        },
        "maintainers": [{"name": "ann", "email": "ann@example.com"}],
    }
    update = parse_update(
        json.dumps(doc).encode(), name="tool", versions=stored, maintainers=people
    )
    assert update == Update(deprecated={"1.0.0": "use 2", "2.0.0": ""})
    del doc["versions"]["1.1.0"]  # npm unpublish tool@1.1.0
    update = parse_update(
        json.dumps(doc).encode(), name="tool", versions=stored, maintainers=people
    )
    assert update.removed == ("1.1.0",)
    owners = {"_id": "tool", "_rev": "3-abc", "maintainers": [{"name": "ann"}, {"name": "bob"}]}
    update = parse_update(
        json.dumps(owners).encode(), name="tool", versions=stored, maintainers=people
    )
    assert update == Update(maintainers=(("ann", ""), ("bob", "")))
    unchanged = {
        "_id": "tool",
        "versions": {v: {} for v in ("1.0.0", "1.1.0")} | {"2.0.0": {"deprecated": "old"}},
    }
    assert parse_update(
        json.dumps(unchanged).encode(), name="tool", versions=stored, maintainers=people
    ).empty


def test_an_update_cannot_add_a_version_or_drop_every_maintainer() -> None:
    stored = {"1.0.0": ""}
    with pytest.raises(InvalidRequestError, match="publish it with its tarball"):
        parse_update(
            b'{"versions": {"1.0.0": {}, "9.9.9": {}}}', name="t", versions=stored, maintainers=()
        )
    with pytest.raises(InvalidRequestError, match="at least one maintainer"):
        parse_update(b'{"maintainers": []}', name="t", versions=stored, maintainers=(("a", ""),))


def test_revisions_tags_and_tag_values() -> None:
    assert parse_rev("12-e6d1a2") == 12
    assert parse_rev("3") == 3
    for bad in ("", "x-1", "-3", "1" * 13):
        with pytest.raises(InvalidRequestError):
            parse_rev(bad)
    assert parse_tag_value(b'"1.2.3"') == "1.2.3"
    for bad_value in (b"1.2.3", b'"latest"', b"{}"):
        with pytest.raises(InvalidRequestError):
            parse_tag_value(bad_value)
    check_tag_name("beta")
    for tag in ("1.0", "v2", "x", "*", "-x", ".hidden", "a b"):
        with pytest.raises(InvalidRequestError):
            check_tag_name(tag)


# -- the real npm CLI's body ----------------------------------------------------------------


class _Capture(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_PUT(self) -> None:
        length = int(self.headers["Content-Length"])
        self.bodies.append((self.path, self.rfile.read(length)))
        reply = b'{"ok":true}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    _Capture.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", _Capture.bodies
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.integration
def test_the_body_the_real_npm_publish_sends_is_read(
    tmp_path: Path, capture: tuple[str, list[tuple[str, bytes]]]
) -> None:
    from support.npmcli import JsClient

    registry, bodies = capture
    client = JsClient(tmp_path / "home", registry)
    project = tmp_path / "pkg"
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "@corp/tool", "version": "1.2.0", "description": "a tool"})
    )
    (project / "index.js").write_text("module.exports = 42\n")
    (project / "README.md").write_text("# tool\n")
    host = registry.removeprefix("http:")
    (project / ".npmrc").write_text(f"{host}:_authToken=not-a-secret\n")
    client.run("npm", "publish", "--tag", "next", cwd=project)
    ((path, sent),) = bodies
    assert path == "/@corp%2ftool"
    got = parse_publish(sent, name="@corp/tool", max_tarball_bytes=LIMIT)
    assert got.version == "1.2.0"
    assert got.tags == {"next": "1.2.0"}
    assert got.tarball[:2] == b"\x1f\x8b"  # a gzip stream, as npm packed it
    assert got.readme is not None
    assert "# tool" in got.readme
