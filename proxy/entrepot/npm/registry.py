"""The private registry's packages: publish, dist-tags, deprecate, unpublish, owners,
listings and search (issue 13; the protocol in ``../shared/spec/npm-registry.md``).

A name published here is **local** from its first publish on: its documents are built from
the store (:func:`packument_bytes`) and computed by the same
:func:`entrepot.npm.packument.compute` as a mirrored package's, published under the same
keys with an index marked local (:meth:`NpmService.publish_local`), so reads are exactly as
fast, and the upstream is never asked for that name again.

A write, in this order (a crash at any point leaves the old or the new state)::

    auth ─▶ rules ─▶ tarball blob (its own key: npm-local/<name>/<ver>-<sha512>-<nonce>.tgz)
         ─▶ one SQL transaction (the store: versions never reused, _rev checked)
         ─▶ documents rebuilt from the store under the package's lock (skipped when the
            stored index is already at that rev or later: concurrent writers coalesce)
         ─▶ blobs of unpublished versions deleted

A refused transaction deletes the blob it wrote; a crash between the transaction and the
documents is healed at the next write of the package, and by every worker at its first
request (:meth:`RegistryEndpoints.heal`: the store's revs against the indexes).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, Literal
from urllib.parse import parse_qs, unquote

from entrepot import __version__
from entrepot.config import NpmSettings
from entrepot.errors import (
    EntrepotError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
)
from entrepot.npm import names
from entrepot.npm.localdocs import LocalPackage, LocalVersion, Pieces, assemble
from entrepot.npm.packument import Documents, policy_for
from entrepot.npm.publish import (
    parse_publish,
    parse_rev,
    parse_tag_value,
    parse_update,
)
from entrepot.npm.registry_auth import Authenticator, Caller
from entrepot.npm.registrystore import (
    DOCUMENT_FIELDS,
    PackageRecord,
    PackageSummary,
    RegistryStore,
)
from entrepot.npm.service import NpmService, local_tarball_key
from entrepot.storage.base import Storage
from entrepot.web.http import AnyResponse, Request, Response

log = logging.getLogger("entrepot.npm.registry")
LEFTOVER_SECONDS = 3600.0
"""How old an unnamed ``npm-local/`` tarball must be before :meth:`collect_leftovers` takes it
(far longer than any publish: its request is bounded by the server's deadlines)."""

JSON = "application/json"
_ATTACHMENTS = re.compile(rb'"_attachments"\s*:\s*\{\s*"')
"""A body with a non-empty ``_attachments`` object is a publish (a deprecate sends the
whole document back, ``_attachments: {}`` included). Inside a JSON string a quote is always
escaped, so this only matches a key."""


# -- pure helpers -------------------------------------------------------------------------------


def rev_text(name: str, rev: int) -> str:
    """``<rev>-<32 hex>``, CouchDB's shape; only the number is ever read back."""
    digest = hashlib.sha256(f"{name}/{rev}".encode()).hexdigest()[:32]
    return f"{rev}-{digest}"


def iso(when: datetime) -> str:
    """``2024-01-02T03:04:05.678Z``, the registry's time format."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def local_package(record: PackageRecord) -> LocalPackage:
    """A package's store record in document order (pure): what :func:`assemble` joins and
    :meth:`LocalPackage.to_bytes` writes whole.

    Each version's manifest is kept as the store has it (compact JSON), ``dist.tarball``
    being its blob's key: the served URL is written under the registry's public URL, and the
    key stays in the index, where the tarball endpoint finds it without a database read."""
    head: dict[str, Any] = {
        "_id": record.name,
        "_rev": rev_text(record.name, record.rev),
        "name": record.name,
        "description": record.document.get("description", ""),
        "dist-tags": record.dist_tags,
    }
    tail: dict[str, Any] = {
        "readme": record.readme or "",
        "maintainers": [{"name": n, "email": e} for n, e in record.maintainers],
    }
    for key in DOCUMENT_FIELDS:
        if key != "description" and key in record.document:
            tail[key] = record.document[key]
    tail["_attachments"] = {}
    return LocalPackage(
        name=record.name,
        head=head,
        versions=[
            LocalVersion(version, entry.manifest_json, iso(entry.published))
            for version, entry in record.versions.items()
        ],
        created=iso(record.created),
        modified=iso(record.modified),
        tail=tail,
    )


def packument_bytes(record: PackageRecord) -> bytes:
    """The whole document of a package published here, from its store record (pure)."""
    return local_package(record).to_bytes()


def with_tarball_keys(record: PackageRecord, keys: Mapping[str, str]) -> PackageRecord:
    """The record with each version's ``dist.tarball`` set to its blob's key."""
    versions = {}
    for version, entry in record.versions.items():
        key = keys.get(version)
        if key is None or f'"tarball":{_dumps(key)}' in entry.manifest_json:
            versions[version] = entry  # (published with its key: nothing to parse)
            continue
        manifest = entry.manifest()
        dist = dict(manifest.get("dist") or {})
        dist["tarball"] = key
        manifest["dist"] = dist
        versions[version] = entry._replace(manifest_json=_dumps(manifest))
    return PackageRecord(
        name=record.name,
        rev=record.rev,
        created=record.created,
        modified=record.modified,
        deleted=record.deleted,
        document=record.document,
        readme=record.readme,
        versions=versions,
        dist_tags=record.dist_tags,
        maintainers=record.maintainers,
        unpublished=record.unpublished,
    )


WriteKind = Literal["package", "rev", "tarball", "tag"]


@dataclass(frozen=True)
class WriteTarget:
    """A write's path: ``/<name>`` (package), ``/<name>/-rev/<rev>`` (rev),
    ``/<name>/-/<file>.tgz/-rev/<rev>`` (tarball), ``/<name>/<tag>`` (tag)."""

    kind: WriteKind
    name: str
    rev: int | None = None
    version: str = ""
    tag: str = ""


def parse_write_path(rel: str) -> WriteTarget:
    """The target of a PUT/DELETE on a package path (``rel`` starts with ``/``; scoped names
    as ``@scope/name``, ``@scope%2fname`` or ``@scope%2Fname``)."""
    text = unquote(rel)
    segments = text[1:].split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise InvalidRequestError(f"invalid package path {rel[:120]!r}")
    if segments[0].startswith("@"):
        if len(segments) < 2:
            raise InvalidRequestError(f"invalid package path {rel[:120]!r}: @scope/name")
        name, rest = f"{segments[0]}/{segments[1]}", segments[2:]
    else:
        name, rest = segments[0], segments[1:]
    names.check_name(name)
    if not rest:
        return WriteTarget("package", name)
    if len(rest) == 2 and rest[0] == "-rev":
        return WriteTarget("rev", name, rev=parse_rev(rest[1]))
    if len(rest) >= 4 and rest[0] == "-" and rest[-2] == "-rev":
        file = "/".join(rest[1:-2])
        parsed = names.parse_path(f"/{name}/-/{file}")
        return WriteTarget("tarball", name, rev=parse_rev(rest[-1]), version=parsed.version)
    if len(rest) == 1:
        names.check_tag(rest[0])
        return WriteTarget("tag", name, tag=rest[0])
    raise InvalidRequestError(
        f"invalid package path {rel[:120]!r}: writes go to /<name>, /<name>/-rev/<rev>,"
        " /<name>/-/<file>.tgz/-rev/<rev> or /<name>/<tag>"
    )


@dataclass(frozen=True)
class SearchQuery:
    text: str
    author: str | None
    maintainer: str | None
    keywords: tuple[str, ...]
    size: int
    offset: int


def parse_search(query: str) -> SearchQuery:
    """``text=foo author:bob keywords:a,b maintainer:x&size=20&from=0``."""
    params = parse_qs(query, keep_blank_values=True)
    words: list[str] = []
    author = maintainer = None
    keywords: list[str] = []
    for word in (params.get("text") or [""])[0].split():
        key, colon, value = word.partition(":")
        if colon and key in ("author", "maintainer", "keywords") and value:
            if key == "author":
                author = value
            elif key == "maintainer":
                maintainer = value
            else:
                keywords += [k for k in value.split(",") if k]
        else:
            words.append(word)
    return SearchQuery(
        text=" ".join(words),
        author=author,
        maintainer=maintainer,
        keywords=tuple(keywords),
        size=_int(params, "size", 20, 0, 250),
        offset=_int(params, "from", 0, 0, 1 << 20),
    )


def _int(params: Mapping[str, list[str]], key: str, default: int, low: int, high: int) -> int:
    try:
        value = int((params.get(key) or [str(default)])[0])
    except ValueError:
        raise InvalidRequestError(f"{key} must be a number") from None
    return max(low, min(high, value))


def _person(value: object) -> dict[str, str] | None:
    if isinstance(value, dict):
        return {k: str(v) for k, v in value.items() if k in ("name", "email", "url")}
    if isinstance(value, str) and value:
        return {"name": value.split("<", 1)[0].strip()}
    return None


def search_object(summary: PackageSummary, base_url: str) -> dict[str, Any]:
    """One result as the npm registry's ``/-/v1/search`` gives it."""
    doc = summary.document
    links = {"npm": f"{base_url.rstrip('/')}/{summary.name}"}
    for key in ("homepage", "repository", "bugs"):
        value = doc.get(key)
        if isinstance(value, dict):
            value = value.get("url")
        if isinstance(value, str):
            links[key] = value
    package: dict[str, Any] = {
        "name": summary.name,
        "scope": names.scope(summary.name) if summary.name.startswith("@") else "unscoped",
        "version": summary.dist_tags.get("latest", ""),
        "description": doc.get("description", ""),
        "keywords": doc.get("keywords") if isinstance(doc.get("keywords"), list) else [],
        "date": iso(summary.modified),
        "links": links,
        "publisher": (
            {"username": summary.maintainers[0][0], "email": summary.maintainers[0][1]}
            if summary.maintainers
            else {}
        ),
        "maintainers": [{"username": n, "email": e} for n, e in summary.maintainers],
    }
    author = _person(doc.get("author"))
    if author is not None:
        package["author"] = author
    return {
        "package": package,
        "score": {"final": 1.0, "detail": {"quality": 1.0, "popularity": 1.0, "maintenance": 1.0}},
        "searchScore": 1.0,
    }


def since_entry(summary: PackageSummary) -> dict[str, Any]:
    """One package of ``/-/all/since``."""
    doc = summary.document
    entry: dict[str, Any] = {
        "name": summary.name,
        "description": doc.get("description", ""),
        "dist-tags": summary.dist_tags,
        "maintainers": [{"name": n, "email": e} for n, e in summary.maintainers],
    }
    for key in ("homepage", "keywords", "repository", "author", "bugs", "license"):
        if key in doc:
            entry[key] = doc[key]
    entry["readmeFilename"] = doc.get("readmeFilename", "")
    entry["time"] = {"modified": iso(summary.modified)}
    entry["versions"] = {v: t for t, v in summary.dist_tags.items()}
    return entry


def _ok(status: int = 201, **fields: object) -> Response:
    body = json.dumps({"ok": True, **fields}).encode()
    return Response(status, body=body, headers={"Content-Type": JSON, "Cache-Control": "no-store"})


def _json(value: object, status: int = 200) -> Response:
    return Response(
        status,
        body=json.dumps(value).encode(),
        headers={"Content-Type": JSON, "Cache-Control": "no-store"},
    )


def _method_not_allowed(method: str, what: str, allowed: str) -> Response:
    message = f"{method} {what} is not served; allowed: {allowed}"
    return Response(
        405,
        body=json.dumps({"error": message, "reason": message}).encode(),
        headers={"Content-Type": JSON, "Allow": allowed},
    )


# -- the endpoints ------------------------------------------------------------------------------


class RegistryEndpoints:
    def __init__(
        self,
        store: RegistryStore,
        auth: Authenticator,
        service: NpmService,
        storage: Storage,
        settings: NpmSettings,
    ) -> None:
        self.store = store
        self.auth = auth
        self.service = service
        self.storage = storage
        self.settings = settings
        self.pieces = Pieces()
        service.startup.append(self.heal)

    # -- reads and listings under /-/ ---------------------------------------------------------

    async def endpoint(self, request: Request, rel: str) -> AnyResponse | None:
        if rel == "":  # GET /: the registry's own document, with its counts
            docs, deleted = await self.store.counts()
            return _json(
                {
                    "db_name": "registry",
                    "engine": f"entrepot/{__version__}",
                    "doc_count": docs,
                    "doc_del_count": deleted,
                    "doc": "an npm registry and mirror: npm config set registry <this URL>",
                }
            )
        if rel == "-/ping":  # this registry answers for itself, upstream or not
            return _json({})
        if rel.startswith("-/package/"):
            return await self._dist_tags(request, rel[len("-/package/") :])
        if rel == "-/v1/search":
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed(request.method, "/-/v1/search", "GET, HEAD")
            return await self._search(request)
        if rel in ("-/all/since", "-/all"):
            return await self._all_since(request)
        if rel.startswith("-/by-user/"):
            users = [u for u in unquote(rel[len("-/by-user/") :]).split("|") if u]
            if not users:
                raise InvalidRequestError("name at least one user: /-/by-user/alice|bob")
            return _json(await self.store.by_users(users[:100]))
        return None

    async def _dist_tags(self, request: Request, rest: str) -> Response:
        text = unquote(rest)
        head, sep, tag = text.partition("/dist-tags")
        if not sep or (tag and not tag.startswith("/")):
            raise NotFoundError(f"/-/package/{rest[:120]}: want /-/package/<name>/dist-tags")
        name, tag = head, tag[1:]
        names.check_name(name)
        if not tag:
            if request.method not in ("GET", "HEAD"):
                return _method_not_allowed(request.method, "dist-tags", "GET, HEAD")
            return _json(await self._tags(name))
        names.check_tag(tag)
        if request.method == "GET":
            tags = await self._tags(name)
            if tag not in tags:
                raise NotFoundError(f"{name} has no dist-tag {tag!r}")
            return _json(tags[tag])
        if request.method in ("PUT", "POST"):
            return await self._set_tag(request, name, tag)
        if request.method == "DELETE":
            caller = await self.auth.require(request, write=True)
            await self._maintained(name, caller)
            await self.store.remove_tag(name, tag, now=_now())
            await self.documents(name)
            return _ok(200)
        return _method_not_allowed(request.method, "dist-tags", "GET, PUT, DELETE")

    async def _tags(self, name: str) -> dict[str, str]:
        """The package's dist-tags: the store's for a local package, else the mirror's."""
        tags = await self.store.tags(name)
        if tags is not None:
            return tags
        package, _, _ = await self.service.package(name)
        return dict(package.index.dist_tags)

    async def _set_tag(self, request: Request, name: str, tag: str) -> Response:
        caller = await self.auth.require(request, write=True)
        version = parse_tag_value(request.body)
        await self._maintained(name, caller)
        await self.store.set_tag(name, tag, version, now=_now())
        await self.documents(name)
        return _ok(201)

    async def _search(self, request: Request) -> Response:
        query = parse_search(request.query)
        start = time.perf_counter()
        found = await self.store.search(
            query.text,
            author=query.author,
            maintainer=query.maintainer,
            keywords=query.keywords,
            size=query.size,
            offset=query.offset,
        )
        objects = [search_object(s, self.service.base_url) for s in found.packages]
        total = found.total
        upstream = self.service.upstream
        if upstream is not None and len(objects) < query.size:
            local = {o["package"]["name"] for o in objects}
            try:
                passed = await upstream.passthrough(
                    "GET", "-/v1/search", request.query, {"accept": JSON}, b""
                )
                theirs = json.loads(passed.body) if passed.status == 200 else {}
            except (EntrepotError, ValueError) as e:
                log.warning("search: the upstream's part is left out: %s", e)
                theirs = {}
            more = theirs.get("objects") if isinstance(theirs, dict) else None
            if isinstance(more, list):
                for item in more:
                    name = item.get("package", {}).get("name") if isinstance(item, dict) else None
                    if isinstance(name, str) and name not in local:
                        objects.append(item)
                total += int(theirs.get("total") or 0)
            objects = objects[: query.size]
        return _json(
            {
                "objects": objects,
                "total": total,
                "time": datetime.now(UTC).strftime("%a %b %d %Y %H:%M:%S GMT+0000 (UTC)"),
                "took": round((time.perf_counter() - start) * 1000),
            }
        )

    async def _all_since(self, request: Request) -> Response:
        params = parse_qs(request.query)
        try:
            since = int((params.get("startkey") or ["0"])[0].strip('"'))
        except ValueError:
            raise InvalidRequestError("startkey is a time in milliseconds") from None
        found = await self.store.all_since(since)
        body: dict[str, Any] = {"_updated": int(time.time() * 1000)}
        for summary in found:
            body[summary.name] = since_entry(summary)
        return _json(body)

    # -- writes on package paths --------------------------------------------------------------

    async def write(self, request: Request, rel: str) -> AnyResponse | None:
        target = parse_write_path(rel)
        method = request.method
        if target.kind == "package" and method == "PUT":
            if _ATTACHMENTS.search(request.body):
                return await self._publish(request, target.name)
            return await self._update(request, target.name, None)
        if target.kind == "rev" and method == "PUT":
            return await self._update(request, target.name, target.rev)
        if target.kind == "rev" and method == "DELETE":
            return await self._unpublish_all(request, target.name, target.rev)
        if target.kind == "tarball" and method == "DELETE":
            return await self._remove_tarball(request, target)
        if target.kind == "tag" and method == "PUT":
            return await self._set_tag(request, target.name, target.tag)
        allowed = {
            "package": "PUT",
            "rev": "PUT, DELETE",
            "tarball": "DELETE",
            "tag": "PUT",
        }[target.kind]
        return _method_not_allowed(method, rel[:120], allowed)

    def _check_rules(self, name: str, caller: Caller) -> None:
        """``npm.registry.publish``: the first rule whose pattern matches decides."""
        for rule in self.settings.registry.publish:
            pattern = next((p for p in rule.packages if fnmatchcase(name, p)), None)
            if pattern is None:
                continue
            if rule.allow == "nobody":
                raise ForbiddenError(
                    f"nobody may publish {name} on this registry (npm.registry.publish:"
                    f" {pattern!r} allows nobody)"
                )
            if rule.allow == "users" and caller.user not in rule.users:
                raise ForbiddenError(
                    f"{caller.user} may not publish {name} on this registry: only"
                    f" {', '.join(rule.users) or 'nobody'} may ({pattern!r} in"
                    " npm.registry.publish)"
                )
            return
        raise ForbiddenError(
            f"no rule of this registry lets anyone publish {name} (npm.registry.publish)"
        )

    async def _maintained(self, name: str, caller: Caller) -> PackageRecord:
        """The live package, which ``caller`` maintains (or administers)."""
        record = await self.store.package(name)
        if record is None or record.deleted is not None:
            raise NotFoundError(f"{name} is not published on this registry")
        if not caller.admin and caller.user not in {u for u, _ in record.maintainers}:
            owners = ", ".join(u for u, _ in record.maintainers)
            raise ForbiddenError(
                f"{caller.user} is not a maintainer of {name} (maintainers: {owners}): ask one"
                f" of them to run `npm owner add {caller.user} {name}`"
            )
        return record

    async def _publish(self, request: Request, name: str) -> Response:
        caller = await self.auth.require(request, write=True)
        self._check_rules(name, caller)
        p = await asyncio.to_thread(
            parse_publish,
            request.body,
            name=name,
            max_tarball_bytes=self.settings.max_tarball_bytes,
        )
        key = local_tarball_key(name, p.version, p.integrity, secrets.token_hex(4))
        # Stored with its blob's key as dist.tarball: the documents splice it as it is.
        dist = dict(p.manifest.get("dist") or {})
        dist["tarball"] = key
        p = replace(p, manifest={**p.manifest, "dist": dist})
        await self.storage.put_bytes(key, p.tarball)
        try:
            rev = await self.store.publish(
                p, tarball_key=key, size=len(p.tarball), user=caller.user, now=_now()
            )
        except BaseException:
            await asyncio.shield(self.storage.delete(key))
            raise
        await self.documents(name, published={p.version: key})
        log.info("%s published %s@%s (rev %d)", caller.user, name, p.version, rev)
        return _ok(201, id=name, rev=rev_text(name, rev), success=True)

    async def _update(self, request: Request, name: str, rev: int | None) -> Response:
        """A whole-document write: deprecations, a removed version, the maintainers."""
        caller = await self.auth.require(request, write=True)
        record = await self._maintained(name, caller)
        change = parse_update(
            request.body,
            name=name,
            versions=record.deprecations(),
            maintainers=record.maintainers,
        )
        if rev is None:
            sent = _body_rev(request.body)
            rev = record.rev if sent is None else sent
        if change.maintainers is not None:
            for user, _ in change.maintainers:
                if user not in {u for u, _ in record.maintainers} and (
                    await self.store.user(user) is None
                ):
                    raise NotFoundError(f"no user {user} on this registry: they log in first")
        result = await self.store.update(name, change, now=_now(), rev=rev)
        await self.documents(name)
        await self._delete_blobs(result.tarball_keys)
        return _ok(201, id=name, rev=rev_text(name, result.rev))

    async def _unpublish_all(self, request: Request, name: str, rev: int | None) -> Response:
        caller = await self.auth.require(request, write=True)
        await self._maintained(name, caller)
        result = await self.store.unpublish_all(name, now=_now(), rev=rev)
        await self.documents(name)
        await self._delete_blobs(result.tarball_keys)
        log.info("%s unpublished all of %s", caller.user, name)
        return _ok(201, id=name, rev=rev_text(name, result.rev))

    async def _remove_tarball(self, request: Request, target: WriteTarget) -> Response:
        caller = await self.auth.require(request, write=True)
        name = target.name
        record = await self.store.package(name)
        if record is None:
            raise NotFoundError(f"{name} is not published on this registry")
        if not caller.admin and record.deleted is None:
            await self._maintained(name, caller)
        key = await self.store.remove_version_tarball(
            name, target.version, now=_now(), rev=target.rev
        )
        await self.documents(name)
        await self._delete_blobs([key] if key else [])
        return _ok(200)

    async def _delete_blobs(self, keys: list[str]) -> None:
        for key in keys:
            if key.startswith("npm-local/"):
                try:
                    await self.storage.delete(key)
                except (OSError, EntrepotError) as e:  # the version is gone already
                    log.warning("could not delete %s: %s", key, e)

    # -- documents ------------------------------------------------------------------------------

    async def documents(self, name: str, *, published: Mapping[str, str] | None = None) -> None:
        """The documents of ``name`` rebuilt from the store, unless the stored index is at
        the store's rev already (another writer, or worker, built them meanwhile).

        Each version's blob key comes from the stored index, or ``published`` (the version
        just published), or else from the store (one query)."""
        async with self.service.local_lock(name):
            record = await self.store.package(name)
            if record is None:
                return
            built = await self.service.local_rev(name)
            if built is not None and built >= record.rev:
                return
            keys = self.service.local_tarballs(name)
            keys.update(published or {})
            if any(v not in keys for v in record.versions):
                keys = await self.store.tarball_keys(name)
            raw, docs = await asyncio.to_thread(self._assemble, with_tarball_keys(record, keys))
            await self.service.publish_local(
                name, raw, rev=record.rev, deleted=record.deleted is not None, documents=docs
            )

    def _assemble(self, record: PackageRecord) -> tuple[bytes, Documents | None]:
        """The packument, and its documents when they can be joined from each version's
        served bytes (made once per worker): a publish then costs the same at the 100th
        version as at the first. None for compute to decide (a blocked version, ...)."""
        package = local_package(record)
        docs = None
        if record.deleted is None:
            blocked = policy_for(record.name, blocked=self.service.policy.blocked)
            docs = assemble(
                package,
                base_url=self.service.base_url,
                blocked=blocked.blocked_versions,
                pieces=self.pieces,
            )
        return package.to_bytes(), docs

    async def heal(self) -> None:
        """Documents left behind the store by a crash (between a write's transaction and its
        documents) rebuilt: every package whose stored index is older than its rev."""
        revs = await self.store.revs()
        healed = 0
        for name, rev in revs.items():
            try:
                built = await self.service.local_rev(name)
            except EntrepotError:
                built = None
            if built is None or built < rev:
                await self.documents(name)
                healed += 1
        if healed:
            log.warning("rebuilt the documents of %d package(s) a crash left behind", healed)
        await self.collect_leftovers()

    async def collect_leftovers(self, *, older_than: float = LEFTOVER_SECONDS) -> int:
        """Delete the tarballs under ``npm-local/`` that no version names and that are older
        than ``older_than`` seconds: a publish writes its tarball before its transaction, so a
        crash (or a refused transaction whose clean-up was cut short) between the two leaves
        one behind. The age spares publishes in flight in other workers or replicas."""
        referenced = await self.store.referenced_tarball_keys()
        cutoff = (time.time() - older_than) * 1e9
        removed = 0
        for blob in await self.storage.list_prefix("npm-local"):
            if blob.key not in referenced and blob.mtime_ns < cutoff:
                await self.storage.delete(blob.key)
                removed += 1
        if removed:
            log.warning(
                "removed %d tarball(s) left behind by publishes that did not finish", removed
            )
        return removed


def _body_rev(body: bytes) -> int | None:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    value = doc.get("_rev") if isinstance(doc, dict) else None
    return parse_rev(value) if isinstance(value, str) else None


def _now() -> datetime:
    return datetime.now(UTC)
