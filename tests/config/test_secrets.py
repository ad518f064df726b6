"""The key ring: sealing routing keys at rest, opening them fail-closed, rotation, parsing."""

from __future__ import annotations

import base64

import pytest

from config.errors import ConfigurationError, UndecryptableError
from config.secrets import (
    KeyRing,
    fingerprint,
    generate_key,
    key_id,
    parse_key_ring,
    stored_key_id,
)
from config.settings import load_settings

SECRET = "R0utingKey0123456789abcdefABCDEF"


def ring(*keys: str) -> KeyRing:
    return parse_key_ring(",".join(keys))


def test_sealed_secret_opens_and_holds_no_plaintext() -> None:
    key = generate_key()
    sealed = ring(key).seal(SECRET, "prod")
    assert SECRET not in sealed
    scheme, kid, _nonce, _body = sealed.split(":")
    assert (scheme, kid) == ("v1", key_id(base64.b64decode(key)))
    assert stored_key_id(sealed) == kid
    assert ring(key).open(sealed, "prod") == SECRET


def test_every_seal_uses_a_new_nonce() -> None:
    keys = ring(generate_key())
    first, second = keys.seal(SECRET, "prod"), keys.seal(SECRET, "prod")
    assert first != second
    assert first.split(":")[2] != second.split(":")[2]


def test_a_ciphertext_copied_to_another_destination_does_not_open() -> None:
    keys = ring(generate_key())
    sealed = keys.seal(SECRET, "prod")
    with pytest.raises(UndecryptableError) as caught:
        keys.open(sealed, "staging")
    assert SECRET not in str(caught.value) and sealed not in str(caught.value)


def test_a_key_missing_from_the_ring_fails_closed_naming_the_key_id() -> None:
    old, other = generate_key(), generate_key()
    sealed = ring(old).seal(SECRET, "prod")
    with pytest.raises(UndecryptableError) as caught:
        ring(other).open(sealed, "prod")
    message = str(caught.value)
    assert stored_key_id(sealed) in message and "MONITAO_PD_SECRET_KEYS" in message
    assert SECRET not in message and sealed.split(":")[3] not in message


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1],   # ciphertext altered
    lambda s: s.replace("v1:", "v2:", 1),                          # unknown scheme
    lambda s: ":".join(s.split(":")[:3]),                          # truncated
    lambda s: s.split(":")[0] + ":" + s.split(":")[1] + ":AAAA:" + s.split(":")[3],  # nonce
    lambda s: "not sealed at all",
])
def test_an_altered_or_malformed_value_fails_closed(mangle) -> None:
    keys = ring(generate_key())
    stored = mangle(keys.seal(SECRET, "prod"))
    with pytest.raises(UndecryptableError) as caught:
        keys.open(stored, "prod")
    assert SECRET not in str(caught.value)


def test_rotation_new_key_first_seals_with_it_and_still_opens_the_old() -> None:
    old, new = generate_key(), generate_key()
    sealed_old = ring(old).seal(SECRET, "prod")
    rotated = ring(new, old)
    assert rotated.open(sealed_old, "prod") == SECRET
    resealed = rotated.seal(SECRET, "prod")
    assert stored_key_id(resealed) == rotated.primary_id == key_id(base64.b64decode(new))
    assert ring(new).open(resealed, "prod") == SECRET
    assert not ring(new).holds(sealed_old) and rotated.holds(sealed_old)


@pytest.mark.parametrize(("text", "expected"), [
    ("", "no key given"),
    ("bm90IGJhc2U2NA==", "key 1 is 10 bytes once decoded, not 32"),
    ("{k},%%%notbase64", "key 2 is not valid base64"),
    ("{k},,{k2}", "key 2 is empty"),
    ("{k},{k}", "key 2 repeats key 1"),
])
def test_a_bad_key_ring_names_the_position_never_the_value(text: str, expected: str) -> None:
    key, key2 = generate_key(), generate_key()
    text = text.format(k=key, k2=key2)
    with pytest.raises(ValueError, match=expected) as caught:
        parse_key_ring(text)
    assert key not in str(caught.value) and "%%%notbase64" not in str(caught.value)


def test_settings_refuse_a_bad_key_ring_without_echoing_it() -> None:
    good, bad = generate_key(), base64.b64encode(b"short secret material").decode()
    with pytest.raises(ConfigurationError) as caught:
        load_settings(secret_keys=f"{good},{bad}")
    [line] = caught.value.problems
    assert line.startswith("MONITAO_PD_SECRET_KEYS: key 2 is 21 bytes")
    assert good not in line and bad not in line


def test_settings_key_ring_and_repr_show_no_key() -> None:
    key = generate_key()
    settings = load_settings(secret_keys=key)
    keys = settings.key_ring()
    assert keys is not None and keys.ids == (key_id(base64.b64decode(key)),)
    assert key not in repr(settings) and key not in repr(keys)
    assert load_settings().key_ring() is None


def test_generated_keys_are_random_32_byte_keys() -> None:
    keys = {generate_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(base64.b64decode(k, validate=True)) == 32 for k in keys)


def test_fingerprint_is_8_hex_digits_of_sha256() -> None:
    import hashlib

    assert fingerprint(SECRET) == hashlib.sha256(SECRET.encode()).hexdigest()[:8]
    assert fingerprint(SECRET) != fingerprint(SECRET[:-1] + "x")
