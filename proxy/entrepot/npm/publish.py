"""What a write to the registry asks for, read and checked before anything is stored (pure).

The npm CLI writes whole documents (``../shared/notes/npm-facts.md``, "Writes"):

* publish: ``PUT /<name>`` with the new version under ``versions``, its ``dist-tags`` and the
  tarball in ``_attachments`` (base64) → :func:`parse_publish`;
* deprecate: ``PUT /<name>`` with the whole document, ``versions[v].deprecated`` set ("" to
  undo), no attachment → :func:`parse_update`;
* unpublish a version: ``PUT /<name>/-rev/<rev>`` with the document without it; owner
  changes: the same path with ``{_id, _rev, maintainers}`` → :func:`parse_update`;
* dist-tags: a bare JSON string → :func:`parse_tag_value`.

Every refusal is an :class:`~entrepot.errors.InvalidRequestError` (400) whose message says
what was wrong and what to do; nothing here touches storage.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from entrepot.errors import InvalidRequestError
from entrepot.npm import names, semver
from entrepot.npm.integrity import expected_from_dist, sri

__all__ = [
    "Publish",
    "Update",
    "parse_publish",
    "parse_rev",
    "parse_tag_value",
    "parse_update",
]

MANIFEST_LIMIT = 1 << 20
"""Bytes of one version's manifest (without the readme): npm's own registry allows less."""


@dataclass(frozen=True)
class Publish:
    """One new version: its manifest as sent (``dist`` completed by the server), the tags to
    point at it, and the tarball's bytes with the digests the server computed."""

    name: str
    version: str
    manifest: dict[str, Any]
    tags: dict[str, str]
    tarball: bytes
    integrity: str  # sha512 SRI, computed here
    shasum: str  # sha1 hex, computed here
    readme: str | None = None
    access: str | None = None


@dataclass(frozen=True)
class Update:
    """A metadata write on an existing package, as the difference from what is stored:
    ``deprecated`` maps versions to their new message ("" = undeprecated), ``removed`` lists
    versions the document no longer has (an unpublish), ``maintainers`` is the new list when
    the document changes it."""

    deprecated: dict[str, str] = field(default_factory=dict)
    removed: tuple[str, ...] = ()
    maintainers: tuple[tuple[str, str], ...] | None = None  # (name, email)

    @property
    def empty(self) -> bool:
        return not self.deprecated and not self.removed and self.maintainers is None


def _object(body: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequestError(f"{what}: the request body is not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidRequestError(f"{what}: the request body is not a JSON object")
    return doc


def _same_name(doc: Mapping[str, Any], name: str, what: str, *, version: str = "") -> None:
    """The document's ``_id`` and ``name`` (a version's manifest: ``_id`` is
    ``name@version``) are the package's own."""
    for key in ("_id", "name"):
        value = doc.get(key)
        own = f"{name}@{version}" if version and key == "_id" else name
        if value is not None and value != own:
            raise InvalidRequestError(
                f"{what}: the document's {key} is {json.dumps(value)[:120]}, not {name!r}:"
                " publish a package under its own name"
            )


def _tarball(attachment: object, filename: str, limit: int) -> bytes:
    if not isinstance(attachment, dict) or not isinstance(attachment.get("data"), str):
        raise InvalidRequestError(f"attachment {filename}: no base64 'data'")
    text = attachment["data"]
    if len(text) > (limit + 2) // 3 * 4 + 4:
        raise InvalidRequestError(
            f"{filename}: the tarball is larger than this registry's limit of {limit} bytes"
            " (npm.max_tarball_bytes)"
        )
    try:
        # strict_mode: the C check (b64decode's validate=True is a regex over the text: 4x
        # the time of the decoding itself for a 1 MB tarball)
        data = binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidRequestError(f"attachment {filename}: 'data' is not base64") from None
    if len(data) > limit:
        raise InvalidRequestError(
            f"{filename}: the tarball is larger than this registry's limit of {limit} bytes"
            " (npm.max_tarball_bytes)"
        )
    if not data:
        raise InvalidRequestError(f"attachment {filename}: empty tarball")
    length = attachment.get("length")
    if length is not None and length != len(data):
        raise InvalidRequestError(
            f"attachment {filename}: 'length' says {length} bytes, the data holds {len(data)}"
        )
    return data


def parse_publish(body: bytes, *, name: str, max_tarball_bytes: int) -> Publish:
    """``PUT /<name>`` with ``_attachments``: exactly one new version and its tarball.

    The server computes the tarball's sha512 and sha1; a ``dist.integrity`` or
    ``dist.shasum`` sent with the manifest must match them (the client computed them from
    the bytes it packed: a difference means the bytes changed on the way).
    """
    names.check_name(name, new=True)
    what = f"publish of {name}"
    doc = _object(body, what)
    _same_name(doc, name, what)
    versions = doc.get("versions")
    if not isinstance(versions, dict) or len(versions) != 1:
        raise InvalidRequestError(
            f"{what}: the document must hold exactly one version under 'versions'"
        )
    ((version, manifest),) = versions.items()
    try:
        semver.parse(version)
    except InvalidRequestError as e:
        raise InvalidRequestError(f"{what}: {e.message}") from None
    if not isinstance(manifest, dict):
        raise InvalidRequestError(f"{what}@{version}: the version's manifest is not an object")
    _same_name(manifest, name, f"{what}@{version}", version=version)
    if manifest.get("version", version) != version:
        raise InvalidRequestError(
            f"{what}@{version}: the manifest says version {manifest.get('version')!r}"
        )
    attachments = doc.get("_attachments")
    if not isinstance(attachments, dict) or len(attachments) != 1:
        raise InvalidRequestError(f"{what}@{version}: exactly one tarball in '_attachments'")
    ((filename, attachment),) = attachments.items()
    expected_files = {names.tarball_filename(name, version), f"{name}-{version}.tgz"}
    if filename not in expected_files:
        raise InvalidRequestError(
            f"{what}@{version}: the attachment is named {filename[:120]!r}, expected"
            f" {names.tarball_filename(name, version)!r}"
        )
    tarball = _tarball(attachment, filename, max_tarball_bytes)
    digests = {"sha512": hashlib.sha512(tarball).digest(), "sha1": hashlib.sha1(tarball).digest()}
    integrity = sri("sha512", digests["sha512"])
    shasum = digests["sha1"].hex()
    dist = manifest.get("dist")
    if dist is not None and not isinstance(dist, dict):
        raise InvalidRequestError(f"{what}@{version}: 'dist' is not an object")
    dist = dict(dist or {})
    _check_digests(dist, tarball, digests, f"{what}@{version}")
    dist.update({"integrity": integrity, "shasum": shasum})
    manifest = {**manifest, "name": name, "version": version, "dist": dist}
    encoded = json.dumps({k: v for k, v in manifest.items() if k != "readme"})
    if len(encoded) > MANIFEST_LIMIT:
        raise InvalidRequestError(
            f"{what}@{version}: the manifest is over {MANIFEST_LIMIT >> 10} KiB"
        )
    tags = _tags(doc.get("dist-tags"), version, what)
    readme = manifest.get("readme", doc.get("readme"))
    access = doc.get("access")
    return Publish(
        name=name,
        version=version,
        manifest=manifest,
        tags=tags,
        tarball=tarball,
        integrity=integrity,
        shasum=shasum,
        readme=readme if isinstance(readme, str) else None,
        access=access if isinstance(access, str) else None,
    )


def _check_digests(
    dist: Mapping[str, Any], tarball: bytes, digests: dict[str, bytes], what: str
) -> None:
    """``digests``: the tarball's sha512 and sha1, already computed (each hashed once)."""
    expected = expected_from_dist(dist)
    if expected is None:
        if dist.get("integrity") or dist.get("shasum"):
            raise InvalidRequestError(
                f"{what}: dist.integrity / dist.shasum name no algorithm this registry knows"
            )
        return
    digest = digests.get(expected.algorithm) or hashlib.new(expected.algorithm, tarball).digest()
    if not expected.matches(digest):
        raise InvalidRequestError(
            f"{what}: the tarball's bytes are {sri(expected.algorithm, digest)}, but the"
            f" manifest's dist says {expected}: the upload was changed on the way; publish again"
        )
    shasum = dist.get("shasum")
    if isinstance(shasum, str) and shasum and expected.source == "integrity":
        actual = digests["sha1"].hex()
        if shasum.lower() != actual:
            raise InvalidRequestError(
                f"{what}: the tarball's sha1 is {actual}, but dist.shasum says {shasum[:40]}"
            )


def check_tag_name(tag: str) -> None:
    """A dist-tag: URL-safe text that is not a SemVer range (npm refuses ``1.x`` as a tag,
    since ``npm install pkg@1.x`` would read it as a range)."""
    names.check_tag(tag)
    if _looks_like_range(tag):
        raise InvalidRequestError(
            f"invalid dist-tag {tag!r}: a tag cannot be a version or a version range"
        )


def _looks_like_range(tag: str) -> bool:
    text = tag.lstrip("v=")
    head = text.split(".", 1)[0]
    return bool(head) and (head.isdigit() or head in ("x", "X", "*"))


def _tags(value: object, version: str, what: str) -> dict[str, str]:
    if value is None:
        return {"latest": version}
    if not isinstance(value, dict):
        raise InvalidRequestError(f"{what}: 'dist-tags' is not an object")
    tags: dict[str, str] = {}
    for tag, target in value.items():
        check_tag_name(tag)
        if target != version:
            raise InvalidRequestError(
                f"{what}: dist-tag {tag!r} points at {target!r}; a publish can only tag the"
                f" version it publishes ({version}); use `npm dist-tag add` for others"
            )
        tags[tag] = target
    return tags or {"latest": version}


def parse_tag_value(body: bytes) -> str:
    """``PUT /-/package/<name>/dist-tags/<tag>``: the body is a JSON string, the version."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        value = None
    if not isinstance(value, str):
        raise InvalidRequestError('dist-tag: the body must be a JSON string, e.g. "1.2.3"')
    semver.parse(value)
    return value


def parse_rev(rev: str) -> int:
    """``12-ab34...`` → 12: the write counter the document is at (the rest is ignored)."""
    head = rev.split("-", 1)[0]
    if not head.isascii() or not head.isdigit() or len(head) > 12:
        raise InvalidRequestError(f"invalid revision {rev[:40]!r}: want N-hash, e.g. 3-abc")
    return int(head)


def parse_update(
    body: bytes,
    *,
    name: str,
    versions: Mapping[str, str],
    maintainers: tuple[tuple[str, str], ...],
) -> Update:
    """The change a whole-document write makes to a stored package.

    ``versions``: the stored versions and their ``deprecated`` text ("" when not deprecated);
    ``maintainers``: the stored list. A document without ``versions`` changes no version (an
    owner change sends only ``maintainers``); one with ``versions`` removes those it lacks and
    changes ``deprecated`` where it differs. A version it adds is refused: new versions come
    with their tarball (a publish).
    """
    what = f"update of {name}"
    doc = _object(body, what)
    _same_name(doc, name, what)
    update = Update()
    sent = doc.get("versions")
    if sent is not None:
        if not isinstance(sent, dict):
            raise InvalidRequestError(f"{what}: 'versions' is not an object")
        added = sorted(set(sent) - set(versions))
        if added:
            raise InvalidRequestError(
                f"{what}: version {added[0]!r} is not published here; publish it with its"
                " tarball (npm publish)"
            )
        removed = tuple(sorted(set(versions) - set(sent), key=_version_key))
        deprecated: dict[str, str] = {}
        for version, manifest in sent.items():
            if not isinstance(manifest, dict):
                raise InvalidRequestError(f"{what}@{version}: the manifest is not an object")
            message = manifest.get("deprecated", "")
            if message is None or message is False:
                message = ""
            if not isinstance(message, str):
                raise InvalidRequestError(f"{what}@{version}: 'deprecated' must be a string")
            if message != versions[version]:
                deprecated[version] = message
        update = Update(deprecated=deprecated, removed=removed)
    if "maintainers" in doc:
        people = _maintainers(doc["maintainers"], what)
        if people != maintainers:
            if not people:
                raise InvalidRequestError(f"{what}: a package keeps at least one maintainer")
            update = Update(update.deprecated, update.removed, people)
    return update


def _maintainers(value: object, what: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise InvalidRequestError(f"{what}: 'maintainers' is not a list")
    people: list[tuple[str, str]] = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequestError(f"{what}: each maintainer is {{name, email}}")
        email = item.get("email", "")
        people.append((item["name"], email if isinstance(email, str) else ""))
    return tuple(people)


def _version_key(version: str) -> tuple[Any, ...]:
    parsed = semver.try_parse(version)
    return (0, version) if parsed is None else (1, *parsed.key)
