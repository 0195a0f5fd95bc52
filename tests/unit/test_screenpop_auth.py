"""Passwords and session tokens (cti.screenpop.auth): what must hold is that only the
right password and only an unexpired token signed with our secret are accepted, and
that nothing else (a forged, altered, truncated or foreign token) gets through."""

from __future__ import annotations

import base64
import itertools
import json

import pytest

from cti.screenpop.auth import (
    MAX_TOKEN_CHARS,
    Sessions,
    TokenError,
    dummy_hash,
    hash_password,
    verify_password,
)

SECRET = b"unit-test-secret-unit-test-secret!"  # a test fixture, not a real secret
OTHER = b"another-secret-another-secret-another"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def issue(sessions: Sessions, **kw: str) -> str:
    claims = {
        "username": "alice",
        "display_name": "Alice",
        "endpoint": "PJSIP/2001",
        "role": "agent",
    }
    token, _ = sessions.issue(**{**claims, **kw})
    return token


# -- passwords -------------------------------------------------------------------------
def test_a_password_verifies_against_its_own_hash_only() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$")
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    assert not verify_password("correct horse ", stored)
    assert not verify_password("", stored)


def test_each_hash_has_its_own_salt() -> None:
    one, two = hash_password("same password"), hash_password("same password")
    assert one != two
    assert verify_password("same password", one) and verify_password("same password", two)


@pytest.mark.parametrize(
    "stored",
    ["", "plain", "scrypt$1$2$3", "bcrypt$16384$8$1$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA",
     "scrypt$16384$8$1$!!!$AAAA"],
)  # fmt: skip
def test_a_malformed_stored_hash_never_verifies(stored: str) -> None:
    assert not verify_password("anything at all", stored)


def test_password_length_limits() -> None:
    with pytest.raises(ValueError, match="password"):
        hash_password("short")
    with pytest.raises(ValueError, match="password"):
        hash_password("x" * 1025)
    assert not verify_password("x" * 1025, hash_password("x" * 1024))


def test_the_dummy_hash_matches_no_likely_password() -> None:
    assert dummy_hash() == dummy_hash()
    assert not verify_password("", dummy_hash())
    assert not verify_password("password", dummy_hash())


# -- tokens ----------------------------------------------------------------------------
def test_a_token_carries_the_agent_until_it_expires() -> None:
    clock = Clock()
    sessions = Sessions(SECRET, 3600, clock)
    token, issued = sessions.issue(
        username="boss", display_name="The Boss", endpoint="PJSIP/2009", role="supervisor"
    )
    claims = sessions.verify(token)
    assert claims == issued
    assert claims.username == "boss" and claims.endpoint == "PJSIP/2009"
    assert claims.is_supervisor
    assert claims.expires_at == clock.now + 3600
    assert claims.agent_json() == {
        "username": "boss",
        "display_name": "The Boss",
        "endpoint": "PJSIP/2009",
        "role": "supervisor",
    }
    clock.now += 3599
    assert sessions.verify(token).username == "boss"
    clock.now += 1
    with pytest.raises(TokenError, match="expired"):
        sessions.verify(token)


def test_a_token_signed_with_another_secret_is_refused() -> None:
    token = issue(Sessions(OTHER, 3600))
    with pytest.raises(TokenError, match="signature"):
        Sessions(SECRET, 3600).verify(token)


def _tamper(token: str, **changes: object) -> str:
    version, payload, mac = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    raw = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
    return f"{version}.{raw}.{mac}"


@pytest.mark.parametrize(
    "changes",
    [{"role": "supervisor"}, {"ep": "PJSIP/2002"}, {"sub": "bob"}, {"exp": 4_000_000_000}],
)
def test_changing_any_claim_breaks_the_signature(changes: dict[str, object]) -> None:
    sessions = Sessions(SECRET, 3600)
    with pytest.raises(TokenError, match="signature"):
        sessions.verify(_tamper(issue(sessions), **changes))


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "Bearer",
        "v1",
        "v1.abc",
        "v1.abc.def.ghi",
        "v2.abc.def",
        "v1.abc.%%%",
        "v1.abc.d\u00e9f",
        "x" * (MAX_TOKEN_CHARS + 1),
    ],
)
def test_malformed_tokens_are_refused(token: str | None) -> None:
    with pytest.raises(TokenError):
        Sessions(SECRET, 3600).verify(token)


def test_a_correctly_signed_token_with_bad_claims_is_refused() -> None:
    """Defence in depth: even a token we signed must hold the claims we expect."""
    sessions = Sessions(SECRET, 3600)
    signed = "v1." + base64.urlsafe_b64encode(b'{"sub":"a"}').rstrip(b"=").decode()
    token = f"{signed}.{base64.urlsafe_b64encode(sessions._mac(signed)).rstrip(b'=').decode()}"
    with pytest.raises(TokenError, match="malformed"):
        sessions.verify(token)


def test_the_secret_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sessions(b"too short", 3600)
    with pytest.raises(ValueError):
        Sessions(SECRET, 0)


def _mac_variants(mac: str) -> list[str]:
    """Spellings of the same MAC bytes that a lenient base64 decoder accepts."""
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 32 bytes are 43 characters of 6 bits: the last one carries 4 bits and 2 unused ones.
    same_bits = [c for c in last if last.index(c) >> 2 == last.index(mac[-1]) >> 2]
    return [
        mac[:10] + "!" + mac[10:],  # junk outside the alphabet
        mac[:10] + "*$" + mac[10:],
        mac[:10] + " " + mac[10:],
        mac + "=",  # padding
        mac + "=" * 5,
        mac[:-1] + next(c for c in same_bits if c != mac[-1]),  # a non-canonical last character
        mac.replace("-", "+").replace("_", "/"),  # the standard alphabet
    ]


def test_a_mac_is_read_strictly_one_spelling_only() -> None:
    """The MAC is compared as bytes, so a decoder that skips junk characters or padding
    would accept many strings as one token: a token has exactly one valid spelling."""
    sessions = Sessions(SECRET, 3600)
    tokens = (issue(sessions, username=f"alice{n}") for n in itertools.count())
    # One whose MAC has a character of the URL-safe alphabet's own (- or _).
    token = next(t for t in tokens if any(c in "-_" for c in t.rsplit(".", 1)[1]))
    assert sessions.verify(token).username.startswith("alice")
    signed, mac = token.rsplit(".", 1)
    for variant in _mac_variants(mac):
        assert variant != mac
        with pytest.raises(TokenError, match="malformed"):
            sessions.verify(f"{signed}.{variant}")


def test_a_stored_hash_is_read_strictly_too() -> None:
    stored = hash_password("correct horse battery")
    assert verify_password("correct horse battery", stored)
    *head, digest = stored.split("$")
    for variant in set(_mac_variants(digest)) - {digest}:  # no - or _: one is the digest
        assert not verify_password("correct horse battery", "$".join([*head, variant]))
