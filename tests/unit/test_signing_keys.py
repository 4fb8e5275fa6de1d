"""Keys and trust (engine/signing/keys.py, trust.py): every refusal has its exact
code and names its file; the key id is sha256 over the raw public key, checked
against a value computed here without our code."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.errors import ApexError
from engine.signing import (
    KeyFileError,
    Signer,
    Trust,
    TrustFileError,
    generate,
    key_id,
    load_private_pem,
    load_public_pem,
    load_trust,
    public_pem,
    save_trust,
)

# RFC 8032, section 7.1, TEST 1: the secret key and the public key it gives
RFC8032_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"

PKCS8 = serialization.PrivateFormat.PKCS8
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
PEM = serialization.Encoding.PEM
PLAIN = serialization.NoEncryption()


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


def _ed25519_private(passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else PLAIN
    )
    return Ed25519PrivateKey.generate().private_bytes(PEM, PKCS8, encryption)


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# ---- the key id --------------------------------------------------------------


def test_key_id_is_sha256_of_the_raw_public_key_of_a_known_vector() -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_SECRET))
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw.hex() == RFC8032_PUBLIC
    expected = hashlib.sha256(bytes.fromhex(RFC8032_PUBLIC)).hexdigest()
    assert key_id(private.public_key()) == expected
    assert key_id(private.public_key()) == (
        "21fe31dfa154a261626bf854046fd2271b7bed4b6abe45aa58877ef47f9721b9"
    )


def test_key_id_of_a_pem_file_equals_the_key_id_of_its_key(tmp_path: Path) -> None:
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_SECRET))
    path = _write(tmp_path / "rfc.pem", public_pem(private.public_key()), 0o644)
    assert key_id(load_public_pem(path)) == key_id(private.public_key())


# ---- public keys ---------------------------------------------------------------

PUBLIC_CASES: list[tuple[str, Callable[[], bytes], str]] = [
    ("garbage", lambda: b"not a key at all\n", "key_file_malformed"),
    ("empty", lambda: b"", "key_file_malformed"),
    (
        "truncated PEM",
        lambda: public_pem(Ed25519PrivateKey.generate().public_key())[:60],
        "key_file_malformed",
    ),
    (
        "base64 body damaged",
        lambda: public_pem(Ed25519PrivateKey.generate().public_key()).replace(b"MCow", b"MC!w"),
        "key_file_malformed",
    ),
    ("a private key", lambda: _ed25519_private(), "key_file_malformed"),
    ("RSA", lambda: _rsa().public_key().public_bytes(PEM, SPKI), "key_not_ed25519"),
    (
        "EC P-256",
        lambda: ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(PEM, SPKI),
        "key_not_ed25519",
    ),
    (
        "X25519",
        lambda: x25519.X25519PrivateKey.generate().public_key().public_bytes(PEM, SPKI),
        "key_not_ed25519",
    ),
    ("too large", lambda: b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 20000, "key_file_malformed"),
]


@pytest.mark.parametrize(
    ("content", "code"), [(c[1], c[2]) for c in PUBLIC_CASES], ids=[c[0] for c in PUBLIC_CASES]
)
def test_load_public_pem_refuses_with_code_naming_the_file(
    tmp_path: Path, content: Callable[[], bytes], code: str
) -> None:
    path = _write(tmp_path / "signer.pem", content(), 0o644)
    with pytest.raises(KeyFileError) as caught:
        load_public_pem(path)
    assert caught.value.code == code
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: {code}: ")
    assert isinstance(caught.value, ApexError)


def test_load_public_pem_of_a_missing_file_is_key_file_missing(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as caught:
        load_public_pem(tmp_path / "absent.pem")
    assert caught.value.code == "key_file_missing"


@pytest.mark.parametrize("make", [Path.mkdir, os.mkfifo], ids=["directory", "fifo"])
def test_a_key_path_that_is_not_a_regular_file_is_refused_without_blocking(
    tmp_path: Path, make: Callable[[Path], object]
) -> None:
    make(tmp_path / "odd.pem")
    for load in (load_public_pem, lambda path: load_private_pem(path, None)):
        with pytest.raises(KeyFileError) as caught:
            load(tmp_path / "odd.pem")
        assert caught.value.code == "key_file_malformed"


# ---- private keys --------------------------------------------------------------

PRIVATE_CASES: list[tuple[str, Callable[[], bytes], int, bytes | None, str]] = [
    ("mode 0644", lambda: _ed25519_private(), 0o644, None, "key_file_permissions"),
    ("mode 0640", lambda: _ed25519_private(), 0o640, None, "key_file_permissions"),
    ("mode 0604", lambda: _ed25519_private(), 0o604, None, "key_file_permissions"),
    ("wrong passphrase", lambda: _ed25519_private(b"right"), 0o600, b"wrong", "key_passphrase"),
    ("missing passphrase", lambda: _ed25519_private(b"right"), 0o600, None, "key_passphrase"),
    ("garbage", lambda: b"-----BEGIN PRIVATE KEY-----\nxx\n", 0o600, None, "key_file_malformed"),
    ("a public key", lambda: public_pem(Ed25519PrivateKey.generate().public_key()), 0o600,
     None, "key_file_malformed"),
    ("RSA", lambda: _rsa().private_bytes(PEM, PKCS8, PLAIN), 0o600, None, "key_not_ed25519"),
    ("EC P-256", lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(PEM, PKCS8, PLAIN),
     0o600, None, "key_not_ed25519"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "mode", "passphrase", "code"),
    [c[1:] for c in PRIVATE_CASES],
    ids=[c[0] for c in PRIVATE_CASES],
)
def test_load_private_pem_refuses_with_code_naming_the_file(
    tmp_path: Path, content: Callable[[], bytes], mode: int, passphrase: bytes | None, code: str
) -> None:
    path = _write(tmp_path / "private.pem", content(), mode)
    with pytest.raises(KeyFileError) as caught:
        load_private_pem(path, passphrase)
    assert caught.value.code == code
    assert str(caught.value).startswith(f"{path}: {code}: ")


def test_loose_permissions_are_refused_before_the_key_is_read(tmp_path: Path) -> None:
    # even a file that is not a key: what matters is who could have read it
    path = _write(tmp_path / "private.pem", b"whatever", 0o644)
    with pytest.raises(KeyFileError) as caught:
        load_private_pem(path, None)
    assert caught.value.code == "key_file_permissions"
    assert "0644" in str(caught.value)


@pytest.mark.parametrize(
    ("stored", "given"),
    [(None, None), (None, b"ignored"), (b"s3cret", b"s3cret")],
    ids=["plain", "plain, passphrase given", "encrypted"],
)
def test_load_private_pem_reads_an_ed25519_key(
    tmp_path: Path, stored: bytes | None, given: bytes | None
) -> None:
    path = _write(tmp_path / "private.pem", _ed25519_private(stored), 0o600)
    key = load_private_pem(path, given)
    assert isinstance(key, Ed25519PrivateKey)


# ---- generate ---------------------------------------------------------------------


@pytest.mark.parametrize("passphrase", [None, b"correct horse"], ids=["plain", "encrypted"])
def test_generate_writes_a_0600_pkcs8_key_and_its_public_pem(
    tmp_path: Path, passphrase: bytes | None
) -> None:
    old = os.umask(0)  # a permissive umask must not widen the private key's mode
    try:
        keyid, private_path, public_path = generate(
            "alice", tmp_path / "private", tmp_path / "keys", passphrase
        )
    finally:
        os.umask(old)
    assert private_path == tmp_path / "private" / "alice.pem"
    assert public_path == tmp_path / "keys" / "alice.pem"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "private").stat().st_mode) == 0o700
    header = private_path.read_bytes().splitlines()[0]
    want = b"ENCRYPTED PRIVATE KEY" if passphrase else b"-----BEGIN PRIVATE KEY-----"
    assert want in header
    private = load_private_pem(private_path, passphrase)
    assert key_id(private.public_key()) == keyid
    assert key_id(load_public_pem(public_path)) == keyid
    assert public_path.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_generate_never_overwrites_a_key(tmp_path: Path) -> None:
    generate("alice", tmp_path / "private", tmp_path / "keys", None)
    before = (tmp_path / "private" / "alice.pem").read_bytes()
    with pytest.raises(KeyFileError) as caught:
        generate("alice", tmp_path / "private", tmp_path / "keys", None)
    assert caught.value.code == "key_exists"
    assert (tmp_path / "private" / "alice.pem").read_bytes() == before


def test_generate_refuses_when_only_the_public_file_exists_and_leaves_no_private_key(
    tmp_path: Path,
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "bob.pem").write_text("someone else's")
    with pytest.raises(KeyFileError) as caught:
        generate("bob", tmp_path / "private", tmp_path / "keys", None)
    assert caught.value.code == "key_exists"
    assert not (tmp_path / "private" / "bob.pem").exists()


@pytest.mark.parametrize("name", ["", "a/b", "../x", ".", "..", "x" * 65, "bad name", "é"])
def test_generate_refuses_a_name_that_is_not_a_plain_file_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(KeyFileError) as caught:
        generate(name, tmp_path / "private", tmp_path / "keys", None)
    assert caught.value.code == "key_name_invalid"
    assert not (tmp_path / "private").exists()


# ---- the trust file --------------------------------------------------------------


def _signer(keys_dir: Path, name: str) -> tuple[str, str]:
    """A public key `keys_dir/NAME.pem`; returns its key id and file name."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    public = Ed25519PrivateKey.generate().public_key()
    (keys_dir / f"{name}.pem").write_bytes(public_pem(public))
    return key_id(public), f"{name}.pem"


def _trust_text(keys_dir: Path, body: str) -> Path:
    """Write a trust file; `{alice}`, `{bob}`, `{carol}` become real key ids."""
    ids = {name: _signer(keys_dir, name)[0] for name in ("alice", "bob", "carol")}
    (keys_dir / "trust.yaml").write_text(body.format(**ids))
    return keys_dir / "trust.yaml"


TWO = """\
threshold: {k}
signers:
  - name: alice
    keyid: {{alice}}
    pem: alice.pem
  - name: bob
    keyid: {{bob}}
    pem: bob.pem
revoked: {revoked}
"""

TRUST_CASES: list[tuple[str, str, str, int | None]] = [
    ("threshold 0", TWO.format(k=0, revoked="[]"), "trust_threshold_invalid", 1),
    ("threshold -1", TWO.format(k=-1, revoked="[]"), "trust_threshold_invalid", 1),
    ("threshold above signers", TWO.format(k=3, revoked="[]"), "trust_threshold_invalid", 1),
    ("threshold above trusted signers", TWO.format(k=2, revoked="[{alice}]"),
     "trust_threshold_invalid", 1),
    ("no signers, threshold 1", "threshold: 1\nsigners: []\n", "trust_threshold_invalid", 1),
    ("threshold a string", TWO.format(k='"2"', revoked="[]"), "trust_file_malformed", 1),
    ("threshold a bool", TWO.format(k="true", revoked="[]"), "trust_file_malformed", 1),
    ("threshold a float", TWO.format(k="1.5", revoked="[]"), "trust_file_malformed", 1),
    ("duplicate name",
     "threshold: 1\nsigners:\n  - {{name: alice, keyid: {alice}, pem: alice.pem}}\n"
     "  - {{name: alice, keyid: {bob}, pem: bob.pem}}\n",
     "trust_duplicate_signer", 4),
    ("duplicate key id",
     "threshold: 1\nsigners:\n  - {{name: alice, keyid: {alice}, pem: alice.pem}}\n"
     "  - {{name: al, keyid: {alice}, pem: alice.pem}}\n",
     "trust_duplicate_signer", 4),
    ("duplicate pem", "threshold: 1\nsigners:\n  - {{name: a, keyid: {alice}, pem: alice.pem}}\n"
     "  - {{name: b, keyid: {bob}, pem: alice.pem}}\n", "trust_duplicate_signer", 4),
    ("key id mismatch",
     "threshold: 1\nsigners:\n  - name: alice\n    keyid: {bob}\n    pem: alice.pem\n",
     "trust_keyid_mismatch", 4),
    ("unknown top-level field", "threshold: 1\nsigners: []\nquorum: 2\n",
     "trust_file_malformed", 3),
    ("unknown signer field",
     "threshold: 1\nsigners:\n  - name: alice\n    keyid: {alice}\n    pem: alice.pem\n"
     "    role: admin\n", "trust_file_malformed", 6),
    ("missing signer field", "threshold: 1\nsigners:\n  - name: alice\n    pem: alice.pem\n",
     "trust_file_malformed", 3),
    ("key id not hex",
     "threshold: 1\nsigners:\n  - name: alice\n    keyid: {alice}zz\n    pem: alice.pem\n",
     "trust_file_malformed", 4),
    ("key id upper case",
     "threshold: 1\nsigners:\n  - {{name: alice, keyid: 'AB{alice}', pem: alice.pem}}\n",
     "trust_file_malformed", 3),
    ("pem outside the keys directory",
     "threshold: 1\nsigners:\n  - name: alice\n    keyid: {alice}\n    pem: ../alice.pem\n",
     "trust_file_malformed", 5),
    ("pem absolute",
     "threshold: 1\nsigners:\n  - name: alice\n    keyid: {alice}\n    pem: /etc/alice.pem\n",
     "trust_file_malformed", 5),
    ("revoked not a key id", "threshold: 1\nsigners: []\nrevoked: [nope]\n",
     "trust_file_malformed", 3),
    ("malformed YAML", "threshold: 1\nsigners: [\n", "trust_file_malformed", 3),
    ("tab indentation", "threshold: 1\nsigners:\n\t- name: a\n", "trust_file_malformed", 3),
    ("duplicate key", "threshold: 1\nthreshold: 2\n", "trust_file_malformed", 2),
    ("a list at the top", "- threshold: 1\n", "trust_file_malformed", 1),
    ("a scalar at the top", "trust\n", "trust_file_malformed", 1),
    ("an alias", "threshold: &k 1\nsigners: []\nrevoked: *k\n", "trust_file_malformed", 1),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "code", "line"), [c[1:] for c in TRUST_CASES], ids=[c[0] for c in TRUST_CASES]
)
def test_load_trust_refuses_with_code_file_and_line(
    tmp_path: Path, body: str, code: str, line: int | None
) -> None:
    path = _trust_text(tmp_path, body)
    with pytest.raises(TrustFileError) as caught:
        load_trust(tmp_path)
    assert (caught.value.code, caught.value.path, caught.value.line) == (code, str(path), line)
    assert str(caught.value).startswith(f"{path}:{line}: {code}: ")
    assert isinstance(caught.value, ApexError)


def test_threshold_above_signers_names_want_and_got(tmp_path: Path) -> None:
    _trust_text(tmp_path, TWO.format(k=3, revoked="[]"))
    with pytest.raises(TrustFileError) as caught:
        load_trust(tmp_path)
    assert "threshold 3 > 2 trusted signer(s)" in str(caught.value)


def test_a_threshold_that_cannot_be_met_loads_for_repair_only(tmp_path: Path) -> None:
    _trust_text(tmp_path, TWO.format(k=2, revoked="[{alice}]"))
    trust = load_trust(tmp_path, check_threshold=False)
    assert trust.threshold_problem() == (
        "threshold 2 > 1 trusted signer(s); add or trust more keys, or lower the threshold "
        "(1 <= threshold <= 1)"
    )


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (lambda: b"garbage", "key_file_malformed"),
        (lambda: _rsa().public_key().public_bytes(PEM, SPKI), "key_not_ed25519"),
    ],
    ids=["malformed", "RSA"],
)
def test_a_signers_unusable_pem_is_a_key_file_error_naming_it(
    tmp_path: Path, content: Callable[[], bytes], code: str
) -> None:
    _trust_text(tmp_path, TWO.format(k=1, revoked="[]"))
    (tmp_path / "bob.pem").write_bytes(content())
    with pytest.raises(KeyFileError) as caught:
        load_trust(tmp_path)
    assert (caught.value.code, caught.value.path) == (code, str(tmp_path / "bob.pem"))


def test_a_signers_missing_pem_is_key_file_missing(tmp_path: Path) -> None:
    _trust_text(tmp_path, TWO.format(k=1, revoked="[]"))
    (tmp_path / "alice.pem").unlink()
    with pytest.raises(KeyFileError) as caught:
        load_trust(tmp_path)
    assert caught.value.code == "key_file_missing"


def test_a_missing_trust_file_is_an_empty_trust(tmp_path: Path) -> None:
    trust = load_trust(tmp_path / "nowhere")
    assert trust == Trust(threshold=1, signers=(), revoked=())
    assert trust.status_of("0" * 64) == "unknown"


def test_an_empty_trust_file_is_an_empty_trust_with_threshold_1_refused(tmp_path: Path) -> None:
    # an empty file is not a missing one: it states no signers, which no threshold can meet
    (tmp_path / "trust.yaml").write_text("")
    assert load_trust(tmp_path, check_threshold=False) == Trust()
    with pytest.raises(TrustFileError) as caught:
        load_trust(tmp_path)
    assert caught.value.code == "trust_threshold_invalid"


def test_status_and_public_key_of_each_signer(tmp_path: Path) -> None:
    _trust_text(tmp_path, TWO.format(k=1, revoked="[{bob}]"))
    trust = load_trust(tmp_path)
    alice, bob = (s.keyid for s in trust.signers)
    assert [trust.status_of(alice), trust.status_of(bob), trust.status_of("f" * 64)] == [
        "trusted",
        "revoked",
        "unknown",
    ]
    alice_key = trust.public_key(alice)
    assert alice_key is not None
    assert key_id(alice_key) == alice
    assert trust.public_key(bob) is not None  # a revoked key's signature can still be named
    assert trust.public_key("f" * 64) is None
    assert [s.name for s in trust.trusted()] == ["alice"]


def test_save_then_load_keeps_the_trust_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    alice, alice_pem = _signer(tmp_path, "alice")
    bob, bob_pem = _signer(tmp_path, "bob")
    trust = (
        Trust()
        .with_signer(Signer(name="alice", keyid=alice, pem=alice_pem))
        .with_signer(Signer(name="bob", keyid=bob, pem=bob_pem))
        .with_threshold(2)
        .with_revoked("e" * 64)
        .with_revoked("e" * 64)
    )
    save_trust(tmp_path, trust)
    # the loaded trust also holds the keys it read; the file's content is the same
    assert load_trust(tmp_path).model_dump() == trust.model_dump()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alice.pem", "bob.pem", "trust.yaml"]
    assert load_trust(tmp_path).revoked == ("e" * 64,)


def test_save_replaces_the_file_rather_than_rewriting_it(tmp_path: Path) -> None:
    save_trust(tmp_path, Trust())
    before = (tmp_path / "trust.yaml").stat().st_ino
    save_trust(tmp_path, Trust().with_threshold(1))
    assert (tmp_path / "trust.yaml").stat().st_ino != before  # a new file, renamed in place
