"""Passwords and session tokens, with the standard library only.

**Passwords** are hashed with scrypt (memory-hard, so a stolen table is slow to crack
on GPUs) and a random per-user salt; the stored string names its parameters, so they
can be raised later without breaking existing hashes:
``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``.

**Tokens** carry the agent's identity, an expiry and the agent's ``token_version`` at
login, signed with HMAC-SHA256 under ``CTI_SESSION_SECRET``: ``v1.<claims b64>.<mac
b64>``. The signature alone makes a token valid for its life (``CTI_SESSION_TTL_S``);
:mod:`cti.screenpop.revocation` also checks the version against the agents table
(cached for seconds), so logging out, a password change or removing the agent revokes
it; while PostgreSQL is down the signature alone still admits the sidebar.

Every comparison of secrets is constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: scrypt cost: 2**14 × 8 × 128 bytes = 16 MiB and about 50 ms per hash.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
#: What a password may be: at least this long when set (``cti agents add``)...
MIN_PASSWORD_CHARS = 8
#: ... and at most this long ever (hashing a megabyte would be a cheap denial of service).
MAX_PASSWORD_CHARS = 1024
#: Longer than any token we issue; anything longer is refused before it is parsed.
MAX_TOKEN_CHARS = 2048
MIN_SECRET_BYTES = 32

_TOKEN_VERSION = "v1"
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_ROLES = ("agent", "supervisor")


class TokenError(Exception):
    """The token is missing, malformed, forged or expired (the message says which)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    """The bytes that :func:`_b64` wrote as ``text``, read strictly: the URL-safe
    alphabet only, no padding, and the one canonical spelling (the unused low bits of
    the last character zero). The standard decoder skips characters outside the
    alphabet and accepts padding and either alphabet, so many strings would pass as one
    MAC; a token must have exactly one valid form."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not unpadded URL-safe base64")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical base64 of its bytes")
    return data


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * r * n + 1024 * 1024,
        dklen=HASH_BYTES,
    )


def hash_password(password: str) -> str:
    """The stored form of ``password``: scrypt with a fresh random salt."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValueError(
            f"password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, "
            f"not {len(password)}"
        )
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; False for a malformed stored hash."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def dummy_hash() -> str:
    """Checked against when the user does not exist, so that an unknown user takes as
    long to refuse as a wrong password (no probing for user names by timing)."""
    return hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class Claims:
    """Who a valid token speaks for, as it was when the token was issued."""

    username: str
    display_name: str
    endpoint: str
    role: str
    expires_at: float
    token_version: int = 1

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    def agent_json(self) -> dict[str, str]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "endpoint": self.endpoint,
            "role": self.role,
        }


class Sessions:
    """Issues and checks signed, expiring tokens."""

    def __init__(self, secret: bytes, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the session secret must be at least {MIN_SECRET_BYTES} bytes")
        if ttl_s < 1:
            raise ValueError("the session lifetime must be at least 1 second")
        self._key = hashlib.sha256(b"cti-session-v1\0" + secret).digest()
        self.ttl_s = ttl_s
        self._clock = clock

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self._key, signed.encode("ascii"), hashlib.sha256).digest()

    def issue(
        self,
        *,
        username: str,
        display_name: str,
        endpoint: str,
        role: str,
        token_version: int = 1,
    ) -> tuple[str, Claims]:
        expires_at = int(self._clock()) + self.ttl_s
        claims = Claims(username, display_name, endpoint, role, expires_at, token_version)
        body: dict[str, object] = {
            "sub": username,
            "name": display_name,
            "ep": endpoint,
            "role": role,
            "exp": expires_at,
            "ver": token_version,
        }
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        signed = f"{_TOKEN_VERSION}.{payload}"
        return f"{signed}.{_b64(self._mac(signed))}", claims

    def seconds_left(self, claims: Claims) -> float:
        """How long ``claims`` stay valid by this instance's clock (0 once expired)."""
        return max(claims.expires_at - self._clock(), 0.0)

    def verify(self, token: str | None) -> Claims:
        """The claims of a valid token; :class:`TokenError` otherwise."""
        if not token:
            raise TokenError("no token")
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise TokenError("malformed token")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _TOKEN_VERSION:
            raise TokenError("malformed token")
        signed = f"{parts[0]}.{parts[1]}"
        try:
            mac = _unb64(parts[2])
        except (ValueError, binascii.Error):
            raise TokenError("malformed token") from None
        if not hmac.compare_digest(mac, self._mac(signed)):
            raise TokenError("bad signature")
        try:
            body: Any = json.loads(_unb64(parts[1]))
            claims = Claims(
                _str(body["sub"]),
                _str(body["name"]),
                _str(body["ep"]),
                _str(body["role"]),
                float(_int(body["exp"])),
                _int(body["ver"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise TokenError("malformed token") from None
        if claims.role not in _ROLES:
            raise TokenError("malformed token")
        if claims.expires_at <= self._clock():
            raise TokenError("expired token")
        return claims


def _str(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a string")
    return value


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value
