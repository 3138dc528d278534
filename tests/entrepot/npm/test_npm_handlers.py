"""The npm endpoints (NpmHandlers) over a service whose upstream is httpx.MockTransport."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import brotli
import pytest
from npm_fake import Clock, Registry, make_service

from entrepot.config import NpmPolicy
from entrepot.npm.handlers import CORGI, NpmHandlers, codings, representation
from entrepot.web.http import AnyResponse, FileResponse, Request, Response

PREFIX = "/npm/"


def headers_of(response: AnyResponse) -> dict[str, list[str]]:
    """Every header field as sent (names lower-cased, repeated names kept apart)."""
    found: dict[str, list[str]] = {}
    if isinstance(response, Response) and response.fields is not None:
        pairs = [
            line.split(": ", 1) for line in response.fields.decode("latin-1").splitlines() if line
        ]
    else:
        pairs = [[k, v] for k, v in response.headers.items()]
    for name, value in pairs:
        found.setdefault(name.lower(), []).append(value)
    return found


def header(response: AnyResponse, name: str) -> str:
    (value,) = headers_of(response)[name]
    return value


@pytest.fixture
def handlers(tmp_path: Path) -> NpmHandlers:
    registry = Registry({"left": {"1.0.0": 1.6e9, "1.1.0": 1.6e9 + 10}, "@s/p": {"2.0.0": 1.6e9}})
    service = make_service(tmp_path, registry, Clock(), policy=NpmPolicy(private=["@corp/*"]))
    return NpmHandlers(service, prefix=PREFIX)


async def get(
    handlers: NpmHandlers, path: str, *, method: str = "GET", query: str = "", **headers: str
) -> AnyResponse:
    request = Request(method, PREFIX + path, {k.replace("_", "-"): v for k, v in headers.items()})
    request.query = query
    return await handlers.handle(request)


NPM_ACCEPT = f"{CORGI}; q=1.0, application/json; q=0.8, */*"


@pytest.mark.parametrize(
    ("accept", "encoding", "rep"),
    [
        ("", "", "full"),
        # npm and pnpm (minipass-fetch): gzip, never br.
        (NPM_ACCEPT, "gzip,deflate", "abbreviated.gz"),
        (NPM_ACCEPT, "gzip", "abbreviated.gz"),
        # yarn Berry (got), browsers, Node's fetch (undici), curl --compressed: br.
        (NPM_ACCEPT, "gzip, deflate, br", "abbreviated.br"),
        ("application/json", "gzip, deflate, br, zstd", "full.br"),
        ("application/json", "br, gzip, deflate", "full.br"),
        ("*/*", "deflate, gzip, br, zstd", "full.br"),
        (CORGI, "identity", "abbreviated"),
        (CORGI, "deflate", "abbreviated"),  # a coding not served: identity
        ("application/json", "gzip;q=0", "full"),
        ("application/json", "br;q=0, gzip", "full.gz"),
        ("application/json", "br;q=0, gzip;q=0", "full"),
        # q-values: the highest wins; ties go to br, then gzip.
        ("application/json", "gzip;q=1.0, br;q=0.9", "full.gz"),
        ("application/json", "gzip; q=0.5, br; q=0.5", "full.br"),
        ("application/json", "br;q=0.4, identity;q=0.5", "full"),
        ("application/json", "br;q=0.001", "full.br"),  # named beats unnamed identity
        ("application/json", "GZIP;Q=0.8, Br;q=0.7", "full.gz"),  # case-insensitive
        ("application/json", "x-gzip", "full.gz"),
        # *: every coding not named, identity included.
        ("*/*", "*", "full.br"),
        ("*/*", "br;q=0, *", "full.gz"),
        ("*/*", "gzip, *;q=0", "full.gz"),
        ("*/*", "identity;q=0.9, *;q=0.5", "full"),
        # Malformed q: the item is ignored.
        ("application/json", "br;q=x, gzip", "full.gz"),
        ("application/json", "br;q=2, gzip;q=0.1", "full.gz"),
        ("application/json", " , ;q=1, gzip", "full.gz"),
    ],
)
def test_the_representation_follows_accept_and_accept_encoding(
    accept: str, encoding: str, rep: str
) -> None:
    assert representation(accept, encoding) == rep


@pytest.mark.parametrize(
    ("encoding", "taken"),
    [
        ("", ("identity",)),
        ("gzip, deflate, br", ("br", "gzip", "identity")),
        ("gzip;q=0.9, br;q=0.8", ("gzip", "br", "identity")),
        ("br, gzip;q=0", ("br", "identity")),
        ("br, identity;q=0", ("br", "identity")),  # nothing else to send at all
        ("identity;q=0.2, gzip;q=0.3", ("gzip", "identity")),
        ("*;q=0.5, gzip", ("gzip", "br", "identity")),
    ],
)
def test_codings_are_what_the_client_takes_best_first(
    encoding: str, taken: tuple[str, ...]
) -> None:
    """The order the service falls back in when a package's stored documents lack the
    best one (an index written before the brotli forms)."""
    assert codings(encoding) == taken


async def test_brotli_when_preferred_with_its_own_etag(handlers: NpmHandlers) -> None:
    plain = await get(handlers, "left", accept="application/json")
    squeezed = await get(handlers, "left", accept="application/json", accept_encoding="br")
    npm = await get(handlers, "left", accept=NPM_ACCEPT, accept_encoding="gzip,deflate")
    yarn = await get(handlers, "left", accept=NPM_ACCEPT, accept_encoding="gzip, deflate, br")
    assert isinstance(plain, Response)
    for answer in (squeezed, yarn):
        assert isinstance(answer, Response)
        assert header(answer, "content-encoding") == "br"
        assert header(answer, "vary") == "Accept, Accept-Encoding"
    assert isinstance(squeezed, Response)
    assert isinstance(yarn, Response)
    assert brotli.decompress(squeezed.body) == plain.body
    assert header(npm, "content-encoding") == "gzip"
    assert header(yarn, "content-type") == CORGI
    assert isinstance(npm, Response)
    assert brotli.decompress(yarn.body) == gzip.decompress(npm.body)
    etags = {header(a, "etag") for a in (plain, squeezed, npm, yarn)}
    assert len(etags) == 4  # one per document and encoding


async def test_304_for_any_encodings_etag_and_for_if_modified_since(
    handlers: NpmHandlers,
) -> None:
    plain = await get(handlers, "left", accept="application/json")
    zipped = await get(handlers, "left", accept="application/json", accept_encoding="gzip")
    squeezed = await get(handlers, "left", accept="application/json", accept_encoding="br")
    assert header(zipped, "content-encoding") == "gzip"
    assert header(squeezed, "content-encoding") == "br"
    for etag in (header(plain, "etag"), header(zipped, "etag"), header(squeezed, "etag")):
        for encoding in ("identity", "gzip", "br"):
            answer = await get(handlers, "left", if_none_match=etag, accept_encoding=encoding)
            assert answer.status == 304
            assert isinstance(answer, Response)
            assert answer.body == b""
            assert header(answer, "vary") == "Accept, Accept-Encoding"
            if encoding == "br":  # the 304 names what a 200 would have sent
                assert header(answer, "etag") == header(squeezed, "etag")
                assert header(answer, "content-encoding") == "br"
    since = header(plain, "last-modified")
    assert (await get(handlers, "left", if_modified_since=since)).status == 304
    # If-None-Match wins over If-Modified-Since.
    assert (await get(handlers, "left", if_modified_since=since, if_none_match='"x"')).status == 200
    corgi = await get(handlers, "left", accept=CORGI, if_none_match=header(plain, "etag"))
    assert corgi.status == 200  # another document: another ETag
    assert header(corgi, "content-type") == CORGI


async def test_write_true_is_never_cached(handlers: NpmHandlers) -> None:
    answer = await get(handlers, "left", query="write=true")
    assert answer.status == 200
    assert header(answer, "cache-control") == "no-store"
    assert header(answer, "x-entrepot-cache") == "bypass"


async def test_errors_are_json_with_error_and_reason(handlers: NpmHandlers) -> None:
    for path, status in [
        ("@corp%2fsecret", 404),
        ("@corp/secret/-/secret-1.0.0.tgz", 404),
        ("nothing-here", 404),
        ("left/9.9.9", 404),
        ("-/not-an-endpoint", 404),
    ]:
        answer = await get(handlers, path)
        assert answer.status == status, path
        assert isinstance(answer, Response)
        body = json.loads(answer.body)
        assert body["error"]
        assert body["reason"] == body["error"]
        assert header(answer, "content-type") == "application/json"
    put = await get(handlers, "left", method="PUT")
    assert put.status == 405
    assert header(put, "allow") == "GET, HEAD"
    assert isinstance(put, Response)
    assert "read-only" in json.loads(put.body)["error"]


async def test_a_passed_through_answer_has_one_content_type(handlers: NpmHandlers) -> None:
    """Guards a bug: the upstream's lower-case content-type beside our Content-Type sent the
    field twice (clients saw "application/json, application/json")."""
    answer = await get(handlers, "-/ping", query="write=true")
    assert answer.status == 200
    assert headers_of(answer)["content-type"] == ["application/json"]
    assert header(answer, "cache-control") == "no-store"


async def test_versions_tags_and_tarballs(handlers: NpmHandlers) -> None:
    one = await get(handlers, "@s%2Fp/2.0.0")
    assert isinstance(one, Response)
    assert json.loads(one.body)["version"] == "2.0.0"
    latest = await get(handlers, "left/latest")
    assert isinstance(latest, Response)
    assert json.loads(latest.body)["version"] == "1.1.0"
    tarball = await get(handlers, "@s/p/-/p-2.0.0.tgz")
    assert isinstance(tarball, FileResponse)
    assert tarball.path.read_bytes() == Registry({}).tarball("@s/p", "2.0.0")
    assert "immutable" in header(tarball, "cache-control")
    root = await get(handlers, "")
    assert isinstance(root, Response)
    assert json.loads(root.body)["db_name"] == "registry"


async def test_a_large_document_is_sent_from_its_file(tmp_path: Path) -> None:
    """Over IN_MEMORY_BYTES a document goes out with sendfile; its headers are the same."""
    registry = Registry({"big": {f"1.{i}.0": 1.6e9 + i for i in range(1500)}})
    handlers = NpmHandlers(make_service(tmp_path, registry, Clock()), prefix=PREFIX)
    answer = await get(handlers, "big", accept="application/json")
    assert isinstance(answer, FileResponse)
    assert answer.size > 256 << 10
    assert json.loads(answer.path.read_bytes())["dist-tags"]["latest"] == "1.1499.0"
    assert answer.etag == answer.headers["ETag"]
    assert answer.headers["Vary"] == "Accept, Accept-Encoding"
    # Its gzip form is small enough to be answered from memory, with the other ETag.
    zipped = await get(handlers, "big", accept="application/json", accept_encoding="gzip")
    assert header(zipped, "content-encoding") == "gzip"
    assert header(zipped, "etag") != answer.etag
    again = await get(handlers, "big", accept_encoding="gzip", if_none_match=answer.etag)
    assert again.status == 304


async def test_only_the_listed_registry_endpoints_reach_the_upstream(
    handlers: NpmHandlers,
) -> None:
    """The mirror's upstream credentials go with passed-through requests, so only the listed
    endpoints, with their own methods, are passed: no path tricks, no writes."""
    registry = handlers.service.upstream_or_raise()
    assert (await get(handlers, "-/ping")).status == 200
    assert (await get(handlers, "-/v1/search", query="text=left")).status == 200
    assert (await get(handlers, "-/npm/v1/attestations/@s/p@2.0.0")).status == 200
    refused = [
        ("-/v1/search", "POST", 405),
        ("-/v1/search", "DELETE", 405),
        ("-/npm/v1/security/advisories/bulk", "GET", 405),
        ("-/v1/search/../../left/-rev/1", "DELETE", 404),
        ("-/v1/search/x", "GET", 404),
        ("-/whoami", "GET", 404),
        ("-/user/org.couchdb.user:me", "PUT", 404),
        ("-/npm/v1/attestations/../../x@1.0.0", "GET", 400),
        ("-/npm/v1/attestations/left", "GET", 400),
    ]
    for path, method, status in refused:
        answer = await get(handlers, path, method=method)
        assert answer.status == status, (path, method)
        assert isinstance(answer, Response)
        assert "error" in json.loads(answer.body)
    assert registry is handlers.service.upstream


async def test_private_names_are_taken_out_of_audit_requests(tmp_path: Path) -> None:
    """npm audit sends every package of a tree; private ones never reach the upstream,
    gzip body or not, bulk or quick form."""
    import httpx

    seen: list[bytes] = []

    async def upstream(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, json={})

    registry = Registry({"left": {"1.0.0": 1.6e9}})
    service = make_service(tmp_path, registry, Clock(), policy=NpmPolicy(private=["@corp/*"]))
    assert service.upstream is not None
    service.upstream._client = httpx.AsyncClient(transport=httpx.MockTransport(upstream))
    handlers = NpmHandlers(service, prefix=PREFIX)
    bulk = {"left": ["1.0.0"], "@corp/secret": ["1.0.0"], "@corp/other": ["2.0.0"]}
    quick = {
        "name": "app",
        "requires": {"left": "^1.0.0", "@corp/secret": "^1.0.0"},
        "dependencies": {
            "left": {"version": "1.0.0", "requires": {"@corp/other": "^2.0.0"}},
            "@corp/secret": {"version": "1.0.0"},
        },
    }
    for path, doc in (
        ("-/npm/v1/security/advisories/bulk", bulk),
        ("-/npm/v1/security/audits/quick", quick),
    ):
        for zipped in (False, True):
            body = json.dumps(doc).encode()
            headers = {"content-type": "application/json"}
            if zipped:
                body = gzip.compress(body)
                headers["content-encoding"] = "gzip"
            request = Request("POST", PREFIX + path, headers, body=body)
            assert (await handlers.handle(request)).status == 200
    assert len(seen) == 4
    for sent in seen:
        assert b"@corp" not in sent
        assert b"left" in sent


async def test_a_tarball_is_a_file_with_validators_and_immutable_caching(
    handlers: NpmHandlers,
) -> None:
    answer = await get(handlers, "left/-/left-1.0.0.tgz")
    assert isinstance(answer, FileResponse)
    assert answer.headers["ETag"] == answer.etag  # the core answers If-None-Match with it
    assert answer.headers["Last-Modified"].endswith(" GMT")
    assert "immutable" in answer.headers["Cache-Control"]
    assert answer.path.read_bytes().startswith(b"tarball of left@1.0.0")


async def test_a_large_document_304s_without_opening_its_file(tmp_path: Path) -> None:
    """Documents over IN_MEMORY_BYTES go out with sendfile; a revalidation of one is
    answered from the index's ETags (any encoding's), not by opening the file."""
    releases = {f"1.0.{i}": 1.6e9 + i for i in range(3000)}
    service = make_service(tmp_path, Registry({"big": releases}), Clock())
    big = NpmHandlers(service, prefix=PREFIX)
    plain = await get(big, "big", accept="application/json")
    zipped = await get(big, "big", accept="application/json", accept_encoding="gzip")
    squeezed = await get(big, "big", accept="application/json", accept_encoding="br")
    assert isinstance(plain, FileResponse)  # really a large one
    for etag in (header(plain, "etag"), header(zipped, "etag"), header(squeezed, "etag")):
        answer = await get(big, "big", if_none_match=etag, accept_encoding="gzip")
        assert isinstance(answer, Response)
        assert answer.status == 304
        assert header(answer, "etag") == header(zipped, "etag")
