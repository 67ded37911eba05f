"""Pull tokens: short-lived HS256 JWTs (PyJWT) whose key every replica derives from the same secret.

The key is an HMAC of a fixed label under `[server] secret_key` (or data_dir/secret.key), so every
replica that shares the secret verifies every replica's tokens and the credentials key itself never
signs anything. A verified token's principal is kept until the token expires (at most `cache_ttl`),
keyed by a SHA-256 of the token: the warm path decodes each token once, not per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from datetime import UTC, datetime

import jwt
from cachetools import TTLCache

from application.authentication import IssuedToken
from application.ports import Clock
from domain.access import Principal, Role

ISSUER = "entrepot"
SERVICE = "entrepot"
TOKEN_SECONDS = 300     # what docker and containerd expect at least (they refresh on 401)
LEEWAY = 10             # seconds of clock skew between replicas


def signing_key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"entrepot pull tokens v1", hashlib.sha256).digest()


class JwtTokens:
    def __init__(self, secret: str, clock: Clock, expires_in: int = TOKEN_SECONDS, cache_ttl: float = 60.0,
                 size: int = 10_000) -> None:
        self._key = signing_key(secret)
        self._clock = clock
        self._expires_in = expires_in
        self._verified: TTLCache = TTLCache(size, cache_ttl)   # sha256(token) -> (principal, exp)
        self._lock = threading.Lock()

    def issue(self, actor: str, role: str, org: str, grants: list[str]) -> IssuedToken:
        now = int(self._clock.now())
        claims = {"iss": ISSUER, "aud": SERVICE, "sub": actor, "iat": now, "nbf": now,
                  "exp": now + self._expires_in, "jti": secrets.token_urlsafe(12), "role": role, "org": org,
                  # distribution's claim shape, so the token reads the same to anyone who inspects it
                  "access": [{"type": "repository", "name": name, "actions": ["pull"]} for name in grants]}
        token = jwt.encode(claims, self._key, algorithm="HS256")
        issued = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
        return IssuedToken(token, self._expires_in, issued)

    def verify(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock.now()
        with self._lock:
            hit = self._verified.get(key)
        if hit is not None:
            principal, expires = hit
            return principal if now < expires + LEEWAY else None
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], audience=SERVICE, issuer=ISSUER,
                                leeway=LEEWAY, options={"require": ["exp", "iat", "sub"], "verify_iat": False,
                                                        "verify_exp": False, "verify_nbf": False})
            principal = _principal(claims)
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
            return None
        # Time is checked against our Clock (tests advance it), not PyJWT's wall clock.
        if not claims["iat"] - LEEWAY <= now < claims["exp"] + LEEWAY:
            return None
        with self._lock:
            self._verified[key] = (principal, claims["exp"])
        return principal


def _principal(claims: dict) -> Principal:
    names = frozenset(entry["name"] for entry in claims.get("access", [])
                      if entry.get("type") == "repository" and "pull" in entry.get("actions", []))
    return Principal(str(claims["sub"]), Role(claims.get("role", "anonymous")), str(claims.get("org", "")),
                     grants=names)
