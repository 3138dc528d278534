"""Signed notes, as a checksum database signs its tree heads (``golang.org/x/mod/sumdb/note``).

A note is UTF-8 text ending in a newline, then a blank line, then one or more signature lines
``— <name> <base64(key hash (4 bytes, big-endian) + Ed25519 signature)>``. A verifier key is
``<name>+<hash>+<base64(0x01 + Ed25519 public key)>``; its hash is the first four bytes of
SHA-256 over ``name + "\\n" + key bytes``, so a key cannot be quietly renamed. The rules here are
Go's exactly (what counts as malformed, how duplicate and unknown signatures are treated),
because the mirror must accept precisely the notes the go command accepts, and no others.

Errors (the wire-facing ones are verification failures: an upstream sent a bad note)::

    VerificationError
    └── NoteError                     base of every note failure
        ├── MalformedNoteError        not the signed-note syntax
        ├── UnverifiedNoteError       well-formed, but no signature by a known key (.note)
        ├── InvalidSignatureError     a known key's signature does not verify
        ├── UnknownVerifierError      no configured key has this name and hash (open_note keeps
        │                             such signatures as unverified instead of raising)
        ├── AmbiguousVerifierError    two configured keys share a name and hash
        └── MismatchedVerifierError   a Verifiers returned the wrong key
    ConfigError
    └── InvalidKeyError               a verifier or signer key text is malformed
"""

from __future__ import annotations

import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from entrepot.errors import ConfigError, VerificationError

ALG_ED25519 = 1
_MAX_SIGNATURES = 100  # Go's limit: parsing a note with many signatures must stay cheap
_SIG_PREFIX = "— ".encode()
# Go's unicode.IsSpace: the Unicode White_Space property. (Python's str.isspace also counts
# U+001C..U+001F, which Go does not.)
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)


class NoteError(VerificationError):
    """A signed note could not be opened."""


class MalformedNoteError(NoteError):
    def __init__(self, message: str = "malformed note") -> None:
        super().__init__(message)


class UnverifiedNoteError(NoteError):
    """The note parsed, but no signature is by a known key. The parsed note is in ``.note``."""

    def __init__(self, note: Note) -> None:
        super().__init__("note has no verifiable signatures")
        self.note = note


class InvalidSignatureError(NoteError):
    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class UnknownVerifierError(NoteError):
    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"unknown key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


class AmbiguousVerifierError(NoteError):
    """Two configured keys share a name and hash: whoever wrote the key list is not to be
    trusted, so the note is refused rather than checked against either."""

    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"ambiguous key {name}+{key_hash:08x}")


class MismatchedVerifierError(NoteError):
    def __init__(self) -> None:
        super().__init__("verifier name or hash doesn't match signature")


class InvalidKeyError(ConfigError):
    """A verifier or signer key text is malformed (Go's errVerifierID and friends)."""


class Verifier(Protocol):
    """Checks signatures by one key."""

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> int: ...

    def verify(self, msg: bytes, sig: bytes) -> bool: ...


class Signer(Protocol):
    """Signs with one key."""

    @property
    def name(self) -> str: ...

    @property
    def key_hash(self) -> int: ...

    def sign(self, msg: bytes) -> bytes: ...


class Verifiers(Protocol):
    """Finds the verifier for a (name, key hash) pair, or raises UnknownVerifierError."""

    def verifier(self, name: str, key_hash: int) -> Verifier: ...


def key_hash(name: str, key: bytes) -> int:
    """The 32-bit hash that names a key: SHA-256(name + "\\n" + key)[:4], big-endian."""
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n" + key).digest()[:4], "big")


def is_valid_name(name: str) -> bool:
    """Non-empty, no Unicode space and no '+' (Go's isValidName)."""
    return name != "" and "+" not in name and not any(c in _SPACES for c in name)


def b64decode_strict(text: str) -> bytes | None:
    """Go's base64.StdEncoding.DecodeString, strictly: padded, standard alphabet, no spaces.

    (Go also skips ``\\r`` and ``\\n`` inside the text; no signature line can hold them, and a
    key holding them is refused here.)"""
    if len(text) % 4 != 0:
        return None
    try:
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def _b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _parse_hash16(text: str) -> int | None:
    """Exactly eight hex digits (Go: ``len == 8`` and ``strconv.ParseUint(s, 16, 32)``)."""
    if len(text) != 8 or any(c not in "0123456789abcdefABCDEF" for c in text):
        return None
    return int(text, 16)


@dataclass(frozen=True)
class Ed25519Verifier:
    name: str
    key_hash: int
    public_key: bytes  # the raw 32 bytes, without the algorithm byte

    def verify(self, msg: bytes, sig: bytes) -> bool:
        if len(sig) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, msg)
        except (InvalidSignature, ValueError):
            # ValueError: bytes that are not a curve point; Go accepts such a key and then
            # every signature fails, as here.
            return False
        return True


@dataclass(frozen=True)
class Ed25519Signer:
    name: str
    key_hash: int
    private_key: Ed25519PrivateKey = field(repr=False)

    def sign(self, msg: bytes) -> bytes:
        return self.private_key.sign(msg)


def parse_verifier_key(vkey: str) -> Ed25519Verifier:
    """``name+hash+keydata`` → a verifier (Go's NewVerifier)."""
    name, _, rest = vkey.partition("+")
    hash16, _, key64 = rest.partition("+")
    hash_ = _parse_hash16(hash16)
    key = b64decode_strict(key64)
    if hash_ is None or key is None or not is_valid_name(name) or not key:
        raise InvalidKeyError("malformed verifier id")
    if hash_ != key_hash(name, key):
        raise InvalidKeyError("invalid verifier hash")
    if key[0] != ALG_ED25519:
        raise InvalidKeyError("unknown verifier algorithm")
    if len(key) != 1 + 32:
        raise InvalidKeyError("malformed verifier id")
    return Ed25519Verifier(name=name, key_hash=hash_, public_key=key[1:])


def parse_signer_key(skey: str) -> Ed25519Signer:
    """``PRIVATE+KEY+name+hash+keydata`` → a signer (Go's NewSigner)."""
    priv1, _, rest = skey.partition("+")
    priv2, _, rest = rest.partition("+")
    name, _, rest = rest.partition("+")
    hash16, _, key64 = rest.partition("+")
    hash_ = _parse_hash16(hash16)
    key = b64decode_strict(key64)
    if (
        priv1 != "PRIVATE"
        or priv2 != "KEY"
        or hash_ is None
        or key is None
        or not is_valid_name(name)
        or not key
    ):
        raise InvalidKeyError("malformed signer id")
    if key[0] != ALG_ED25519:
        raise InvalidKeyError("unknown signer algorithm")
    if len(key) != 1 + 32:
        raise InvalidKeyError("malformed signer id")
    private_key = Ed25519PrivateKey.from_private_bytes(key[1:])
    # The hash names the public key, which only now is known.
    public = bytes([ALG_ED25519]) + private_key.public_key().public_bytes_raw()
    if hash_ != key_hash(name, public):
        raise InvalidKeyError("invalid signer hash")
    return Ed25519Signer(name=name, key_hash=hash_, private_key=private_key)


def ed25519_verifier_key(name: str, public_key: bytes) -> str:
    """The verifier key text for a raw Ed25519 public key (Go's NewEd25519VerifierKey)."""
    if len(public_key) != 32:
        raise InvalidKeyError(f"invalid public key size {len(public_key)}, expected 32")
    key = bytes([ALG_ED25519]) + public_key
    return f"{name}+{key_hash(name, key):08x}+{_b64encode(key)}"


def generate_key(name: str) -> tuple[str, str]:
    """A new (signer key, verifier key) pair for a server name (Go's GenerateKey).

    The signer key is secret: whoever holds it can sign tree heads for that name."""
    if not is_valid_name(name):
        raise InvalidKeyError(f"invalid key name {name!r}")
    private_key = Ed25519PrivateKey.generate()
    public = bytes([ALG_ED25519]) + private_key.public_key().public_bytes_raw()
    seed = bytes([ALG_ED25519]) + private_key.private_bytes_raw()
    h = key_hash(name, public)
    return (
        f"PRIVATE+KEY+{name}+{h:08x}+{_b64encode(seed)}",
        f"{name}+{h:08x}+{_b64encode(public)}",
    )


class VerifierList:
    """Verifiers over a fixed list of keys (Go's VerifierList)."""

    def __init__(self, *verifiers: Verifier) -> None:
        self._by_id: dict[tuple[str, int], list[Verifier]] = {}
        for v in verifiers:
            self._by_id.setdefault((v.name, v.key_hash), []).append(v)

    def verifier(self, name: str, key_hash: int) -> Verifier:
        found = self._by_id.get((name, key_hash))
        if not found:
            raise UnknownVerifierError(name, key_hash)
        if len(found) > 1:
            raise AmbiguousVerifierError(name, key_hash)
        return found[0]


@dataclass(frozen=True)
class Signature:
    name: str
    key_hash: int
    base64: str  # the encoded signature, key hash included, as it appeared in the note


@dataclass
class Note:
    text: str  # ends in "\n"; excludes the blank line and the signatures
    sigs: list[Signature] = field(default_factory=list)  # verified
    unverified_sigs: list[Signature] = field(default_factory=list)


def open_note(msg: bytes, verifiers: Verifiers | None) -> Note:
    """Parse a signed note and check its signatures (Go's note.Open).

    A signature by a key ``verifiers`` knows must verify (else InvalidSignatureError); one by
    an unknown key is kept in ``unverified_sigs``; repeats are dropped. At least one signature
    must verify, else UnverifiedNoteError (which carries the parsed note).
    """
    known: Verifiers = verifiers if verifiers is not None else VerifierList()
    # Valid UTF-8 with no ASCII control character but newline.
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError() from None
    if any(c < " " and c != "\n" for c in decoded):
        raise MalformedNoteError()

    # The signature block, after the last blank line.
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise MalformedNoteError()
    text, sigs = msg[: split + 1], msg[split + 2 :]
    if not sigs.endswith(b"\n"):
        raise MalformedNoteError()

    note = Note(text=text.decode("utf-8"))
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[bytes] = set()
    for count, full_line in enumerate(sigs[:-1].split(b"\n"), start=1):
        if not full_line.startswith(_SIG_PREFIX):
            raise MalformedNoteError()
        line = full_line[len(_SIG_PREFIX) :]
        name, _, b64 = line.decode("utf-8").partition(" ")
        sig = b64decode_strict(b64)
        if sig is None or not is_valid_name(name) or b64 == "" or len(sig) < 5:
            raise MalformedNoteError()
        hash_ = int.from_bytes(sig[:4], "big")
        if count > _MAX_SIGNATURES:
            raise MalformedNoteError()

        try:
            v = known.verifier(name, hash_)
        except UnknownVerifierError:
            if line not in seen_unverified:
                seen_unverified.add(line)
                note.unverified_sigs.append(Signature(name, hash_, b64))
            continue
        if v.name != name or v.key_hash != hash_:
            raise MismatchedVerifierError()
        if (name, hash_) in seen:
            continue
        seen.add((name, hash_))
        if not v.verify(text, sig[4:]):
            raise InvalidSignatureError(name, hash_)
        note.sigs.append(Signature(name, hash_, b64))

    if not note.sigs:
        raise UnverifiedNoteError(note)
    return note


def sign(note: Note | str, *signers: Signer) -> bytes:
    """The signed message for a note (Go's note.Sign).

    Existing signatures in ``note`` come first, except those by a key among ``signers``, whose
    new signatures replace them at the end. Raises MalformedNoteError if the text does not end
    in a newline or an existing signature is inconsistent, NoteError for a signer whose name
    is not valid; a signer's own exception propagates.
    """
    if isinstance(note, str):
        note = Note(text=note)
    if not note.text.endswith("\n"):
        raise MalformedNoteError()
    text = note.text.encode("utf-8")

    new: list[bytes] = []
    have: set[tuple[str, int]] = set()
    for s in signers:
        have.add((s.name, s.key_hash))
        if not is_valid_name(s.name):
            raise NoteError("invalid signer")
        sig = s.key_hash.to_bytes(4, "big") + s.sign(text)
        new.append(_SIG_PREFIX + f"{s.name} {_b64encode(sig)}\n".encode())

    out = [text, b"\n"]
    for old in [*note.sigs, *note.unverified_sigs]:
        if not is_valid_name(old.name):
            raise MalformedNoteError()
        if (old.name, old.key_hash) in have:
            continue
        raw = b64decode_strict(old.base64)
        if raw is None or len(raw) < 4 or int.from_bytes(raw[:4], "big") != old.key_hash:
            raise MalformedNoteError()
        out.append(_SIG_PREFIX + f"{old.name} {old.base64}\n".encode())
    return b"".join([*out, *new])


def verifier_list(keys: Iterable[str]) -> VerifierList:
    """Verifiers for configured verifier key texts; raises InvalidKeyError for a bad one."""
    return VerifierList(*(parse_verifier_key(k) for k in keys))
