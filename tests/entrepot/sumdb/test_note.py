"""Signed notes: Go's own vectors from golang.org/x/mod/sumdb/note/note_test.go, ported."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from entrepot.errors import ConfigError, VerificationError
from entrepot.sumdb.note import (
    AmbiguousVerifierError,
    Ed25519Signer,
    InvalidKeyError,
    InvalidSignatureError,
    MalformedNoteError,
    MismatchedVerifierError,
    Note,
    NoteError,
    Signature,
    Signer,
    UnknownVerifierError,
    UnverifiedNoteError,
    Verifier,
    VerifierList,
    ed25519_verifier_key,
    generate_key,
    key_hash,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign,
)

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_B64 = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
ENOCH_B64 = (
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
)
# Go slices these as byte strings (the em dash is three bytes), so they are bytes here too.
PETER_SIG = f"— PeterNeumann {PETER_B64}\n".encode()
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n".encode()
PETER = Signature("PeterNeumann", 0xC74F20A3, PETER_B64)
ENOCH = Signature("EnochRoot", 0xAF0CFE78, ENOCH_B64)


def _mangled(key: str) -> list[str]:
    """Every proper substring, and every one-byte increment (Go's manglings)."""
    b = key.encode()
    out = [
        b[i:j].decode()
        for i in range(len(b) + 1)
        for j in range(i + 1, len(b) + 1)
        if i != 0 or j != len(b)
    ]
    out += [(b[:i] + bytes([b[i] + 1]) + b[i + 1 :]).decode() for i in range(len(b))]
    return out


def test_new_verifier() -> None:
    v = parse_verifier_key(PETER_VKEY)
    assert (v.name, v.key_hash) == ("PeterNeumann", 0xC74F20A3)
    for bad in _mangled(PETER_VKEY):
        with pytest.raises(InvalidKeyError):
            parse_verifier_key(bad)


@pytest.mark.parametrize(
    "bad",
    [
        # wrong length key, with adjusted key hash
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        # unknown algorithm, with adjusted key hash
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_new_verifier_bad_adjusted(bad: str) -> None:
    with pytest.raises(InvalidKeyError):
        parse_verifier_key(bad)


def test_key_errors_are_config_errors() -> None:
    """A bad key comes from the configuration: the CLI must exit with code 2 for it."""
    with pytest.raises(ConfigError):
        parse_verifier_key("nonsense")


def test_new_signer() -> None:
    s = parse_signer_key(PETER_SKEY)
    assert (s.name, s.key_hash) == ("PeterNeumann", 0xC74F20A3)
    for bad in _mangled(PETER_SKEY):
        with pytest.raises(InvalidKeyError):
            parse_signer_key(bad)


def _check_signer_and_verifier(name: str, signer: Signer, verifier: Verifier) -> None:
    assert signer.name == name
    assert verifier.name == name
    assert signer.key_hash == verifier.key_hash
    msg = b"hi"
    sig = signer.sign(msg)
    assert verifier.verify(msg, sig)
    assert not verifier.verify(msg, bytes([sig[0] + 1 & 0xFF]) + sig[1:])
    assert not verifier.verify(b"ii", sig)


def test_generate_key() -> None:
    skey, vkey = generate_key("EnochRoot")
    _check_signer_and_verifier("EnochRoot", parse_signer_key(skey), parse_verifier_key(vkey))


def test_generate_key_refuses_invalid_name() -> None:
    with pytest.raises(InvalidKeyError):
        generate_key("bad name")


def test_from_ed25519() -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    signer = Ed25519Signer(
        name="EnochRoot",
        key_hash=key_hash("EnochRoot", b"\x01" + public),
        private_key=private,
    )
    vkey = ed25519_verifier_key("EnochRoot", public)
    _check_signer_and_verifier("EnochRoot", signer, parse_verifier_key(vkey))
    with pytest.raises(InvalidKeyError):
        ed25519_verifier_key("EnochRoot", public[:-1])


class _BadSigner:
    name = "bad name"
    key_hash = 0xC74F20A3

    def sign(self, msg: bytes) -> bytes:
        return b""


class _Surprise(Exception):
    pass


class _ErrSigner:
    name = "PeterNeumann"
    key_hash = 0xC74F20A3

    def sign(self, msg: bytes) -> bytes:
        raise _Surprise


def test_sign() -> None:
    signer = parse_signer_key(PETER_SKEY)
    want = TEXT.encode() + b"\n" + PETER_SIG
    assert sign(Note(text=TEXT), signer) == want
    assert sign(TEXT, signer) == want
    # An existing signature by the same key is replaced by the new one.
    old = Signature("PeterNeumann", 0xC74F20A3, "BADSIGN=")
    assert sign(Note(text=TEXT, sigs=[old]), signer) == want

    with pytest.raises(MalformedNoteError, match=r"^malformed note$"):
        sign(Note(text="abc"), signer)
    with pytest.raises(MalformedNoteError):
        sign(Note(text=TEXT, sigs=[Signature("a+b", 0, "ABCD")]))
    with pytest.raises(MalformedNoteError):
        sign(Note(text=TEXT, sigs=[Signature("PeterNeumann", 0xC74F20A3, "BADHASH=")]))
    with pytest.raises(NoteError, match=r"^invalid signer$"):
        sign(Note(text=TEXT), _BadSigner())
    with pytest.raises(_Surprise):
        sign(Note(text=TEXT), _ErrSigner())


def test_sign_keeps_other_signatures_first() -> None:
    """Go's doc example: Enoch re-signs Peter's note; Peter's signature stays first."""
    n = open_note(TEXT.encode() + b"\n" + PETER_SIG, VerifierList(parse_verifier_key(PETER_VKEY)))
    skey, vkey = generate_key("EnochRoot")
    msg = sign(n, parse_signer_key(skey))
    assert msg.startswith(TEXT.encode() + b"\n" + PETER_SIG + "— EnochRoot ".encode())
    both = VerifierList(parse_verifier_key(PETER_VKEY), parse_verifier_key(vkey))
    assert [s.name for s in open_note(msg, both).sigs] == ["PeterNeumann", "EnochRoot"]


def test_verifier_list() -> None:
    peter = parse_verifier_key(PETER_VKEY)
    enoch = parse_verifier_key(ENOCH_VKEY)
    verifiers = VerifierList(peter, enoch, enoch)
    assert verifiers.verifier("PeterNeumann", 0xC74F20A3) is peter
    with pytest.raises(UnknownVerifierError, match=r"^unknown key PeterNeumann\+c74f20a4$"):
        verifiers.verifier("PeterNeumann", 0xC74F20A4)
    with pytest.raises(UnknownVerifierError, match=r"^unknown key PeterNeuman\+c74f20a3$"):
        verifiers.verifier("PeterNeuman", 0xC74F20A3)
    with pytest.raises(AmbiguousVerifierError, match=r"^ambiguous key EnochRoot\+af0cfe78$"):
        verifiers.verifier("EnochRoot", 0xAF0CFE78)


class _FixedVerifier:
    def __init__(self, v: Verifier) -> None:
        self.v = v

    def verifier(self, name: str, key_hash: int) -> Verifier:
        return self.v


def test_open() -> None:
    peter = parse_verifier_key(PETER_VKEY)
    enoch = parse_verifier_key(ENOCH_VKEY)
    text = TEXT.encode()

    # One signature verified, one not.
    n = open_note(text + b"\n" + PETER_SIG + ENOCH_SIG, VerifierList(peter))
    assert n.text == TEXT
    assert n.sigs == [PETER]
    assert n.unverified_sigs == [ENOCH]

    # Both verified.
    n = open_note(text + b"\n" + PETER_SIG + ENOCH_SIG, VerifierList(peter, enoch))
    assert n.sigs == [PETER, ENOCH]
    assert n.unverified_sigs == []

    # Both unverified.
    with pytest.raises(UnverifiedNoteError, match=r"^note has no verifiable signatures$") as e:
        open_note(text + b"\n" + PETER_SIG + ENOCH_SIG, VerifierList())
    assert e.value.note.sigs == []
    assert e.value.note.unverified_sigs == [PETER, ENOCH]
    with pytest.raises(UnverifiedNoteError):
        open_note(text + b"\n" + PETER_SIG, None)

    # Duplicated verifier.
    with pytest.raises(AmbiguousVerifierError, match=r"^ambiguous key EnochRoot\+af0cfe78$"):
        open_note(text + b"\n" + ENOCH_SIG, VerifierList(enoch, peter, enoch))
    # Unused duplicated verifier.
    open_note(text + b"\n" + PETER_SIG, VerifierList(enoch, peter, enoch))

    # Too many signatures.
    with pytest.raises(MalformedNoteError, match=r"^malformed note$"):
        open_note(text + b"\n" + PETER_SIG * 101, VerifierList(peter))
    with pytest.raises(MalformedNoteError):
        open_note(text + b"\n" + PETER_SIG * 101, VerifierList())

    # Invalid signature.
    with pytest.raises(
        InvalidSignatureError, match=r"^invalid signature for key PeterNeumann\+c74f20a3$"
    ):
        open_note(text + b"\n" + PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:], VerifierList(peter))

    # Duplicated verified and unverified signatures.
    enoch_abcd = Signature(
        "EnochRoot",
        0xAF0CFE78,
        "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n"
        + "ABCD"
        + "2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=",
    )
    msg = (
        text
        + b"\n"
        + PETER_SIG
        + PETER_SIG
        + ENOCH_SIG
        + ENOCH_SIG
        + ENOCH_SIG[:60]
        + b"ABCD"
        + ENOCH_SIG[60:]
    )
    n = open_note(msg, VerifierList(peter))
    assert n.sigs == [PETER]
    assert n.unverified_sigs == [ENOCH, enoch_abcd]

    # Verifiers returns a verifier for the wrong name or hash.
    misnamed = PETER_SIG.replace(b"PeterNeumann", b"CarmenSandiego")
    with pytest.raises(MismatchedVerifierError):
        open_note(text + b"\n" + misnamed, _FixedVerifier(peter))
    wrong_hash = PETER_SIG.replace(b"x08g", b"xxxx")
    with pytest.raises(MismatchedVerifierError):
        open_note(text + b"\n" + wrong_hash, _FixedVerifier(peter))


BAD_MESSAGES = [
    TEXT.encode(),
    TEXT.encode() + b"\n",
    TEXT.encode() + b"\n" + PETER_SIG[:-1],
    b"\x01" + TEXT.encode() + b"\n" + PETER_SIG,
    b"\xff" + TEXT.encode() + b"\n" + PETER_SIG,
    TEXT.encode() + b"\n" + f"— Bad Name {PETER_B64}".encode(),
    TEXT.encode() + b"\n" + PETER_SIG + b"Unexpected line.\n",
]


@pytest.mark.parametrize("msg", BAD_MESSAGES)
def test_open_malformed(msg: bytes) -> None:
    with pytest.raises(MalformedNoteError, match=r"^malformed note$"):
        open_note(msg, VerifierList(parse_verifier_key(PETER_VKEY)))


def test_errors_are_verification_errors() -> None:
    """Every failure to open a note is an upstream's bad bytes: nothing is cached (502)."""
    for cls in (
        MalformedNoteError,
        UnverifiedNoteError,
        InvalidSignatureError,
        UnknownVerifierError,
        AmbiguousVerifierError,
        MismatchedVerifierError,
    ):
        assert issubclass(cls, VerificationError)


TREE_TEXT = b"go.sum database tree\n5\nnND/nri/U0xuHUrYSy0HtMeal2vzD9V4k/BO79C+QeI=\n"


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_change_to_a_signed_tree_head_is_refused(data: st.DataObject) -> None:
    """Flipping any bit of a signed note never yields a note that verifies with other text."""
    skey, vkey = generate_key("example.com")
    verifiers = VerifierList(parse_verifier_key(vkey))
    msg = sign(TREE_TEXT.decode(), parse_signer_key(skey))
    assert open_note(msg, verifiers).text == TREE_TEXT.decode()
    i = data.draw(st.integers(0, len(msg) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = msg[:i] + bytes([msg[i] ^ (1 << bit)]) + msg[i + 1 :]
    try:
        n = open_note(tampered, verifiers)
    except NoteError:
        return
    # Only a change the signature does not cover (in Go's rules, none) could get here.
    assert n.text == TREE_TEXT.decode()
