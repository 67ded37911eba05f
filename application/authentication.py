"""Client authentication: verified credentials cached briefly, and the token endpoint's grants.

Credential hashes are slow by design (scrypt, domain/robot.py), so the warm path must not verify
them per request: a verified `<org>+<name>` / token pair is kept `ttl` seconds, keyed by a SHA-256
of the pair (never the clear token), and a Bearer token is verified once by the Tokens port.
A robot disabled, rotated or deleted here is forgotten at once; other replicas notice within `ttl`
(their Bearer tokens live `expires_in` seconds, as with distribution's token servers).
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import anyio.to_thread
from cachetools import TTLCache

from application.access import Access
from application.singleflight import SingleFlight
from domain.access import GLOBAL_ADMIN, Principal, Role, Verdict, rights

CREDENTIALS_TTL = 30.0     # seconds a verified robot credential is trusted without scrypt
FAILURE_TTL = 5.0          # seconds a wrong one is refused without scrypt (a client retrying in a loop)
VERIFIERS = 2              # scrypt verifications running at once


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str     # RFC 3339, as distribution's token servers answer


class Tokens(Protocol):
    """Signs and verifies the short-lived pull tokens (infra/tokens.py: JWTs with PyJWT)."""

    def issue(self, actor: str, role: str, org: str, grants: list[str]) -> IssuedToken: ...

    def verify(self, token: str) -> Principal | None:
        """The principal a valid, unexpired token names (with its grants); None otherwise. Cheap when repeated."""


def credential_key(username: str, secret: str) -> str:
    return hashlib.sha256(f"{username}\0{secret}".encode()).hexdigest()


class Authenticator:
    def __init__(self, access: Access, tokens: Tokens, admin_token: str, ttl: float = CREDENTIALS_TTL,
                 size: int = 4096) -> None:
        self._access = access
        self.tokens = tokens
        self._admin_key = credential_key(GLOBAL_ADMIN, admin_token)
        self._verified: TTLCache = TTLCache(size, ttl)
        self._failed: TTLCache = TTLCache(size, FAILURE_TTL)
        self._lock = threading.Lock()
        self._verifying: SingleFlight[Principal | None] = SingleFlight()
        self._verifiers = anyio.CapacityLimiter(VERIFIERS)

    async def basic(self, username: str, secret: str) -> Principal | None:
        """A robot's (or org admin's) credentials, or `admin` with the admin token; None if wrong."""
        key = credential_key(username, secret)
        if key == self._admin_key:
            return Principal(GLOBAL_ADMIN, Role.ADMIN)
        with self._lock:
            if (found := self._verified.get(key)) is not None:
                return found
            if key in self._failed:
                return None
        # One verification per credential at a time: when a cached one expires under load, the
        # requests that find it gone wait for one scrypt instead of each running their own.
        return await self._verifying.run(key, lambda: self._verify(key, username, secret))

    async def _verify(self, key: str, username: str, secret: str) -> Principal | None:
        # At most VERIFIERS scrypt runs at once (~16 MiB each): a flood of guesses queues here,
        # and leaves the worker threads to the requests that need them.
        principal = await anyio.to_thread.run_sync(self._access.verify, username, secret, limiter=self._verifiers)
        with self._lock:
            if principal is None:
                self._failed[key] = True
            else:
                self._verified[key] = principal
        return principal

    def bearer(self, token: str) -> Principal | None:
        """A pull token from GET /v2/token, or the global admin token itself (the admin may pull anything)."""
        return self.tokens.verify(token) or self.admin(token)

    def admin(self, token: str) -> Principal | None:
        """The global admin token sent as a Bearer token to the admin API."""
        return Principal(GLOBAL_ADMIN, Role.ADMIN) if credential_key(GLOBAL_ADMIN, token) == self._admin_key else None

    def forget(self) -> None:
        """After a robot changed in this process: verify every credential again."""
        with self._lock:
            self._verified.clear()
            self._failed.clear()


@dataclass(frozen=True)
class Scope:
    """One `repository:<name>:<actions>` of a token request, with the org and repository it routes to."""

    name: str
    org: str
    repository: str
    anonymous_pull: bool
    config: Any = None   # the org's OrgConfig (its generation counts a refused attempt to the right org)


def grants(principal: Principal, scopes: list[Scope]) -> list[str]:
    """The `org/repository` pulls a token for `principal` carries: the requested ones its account allows."""
    return sorted({f"{s.org}/{s.repository}" for s in scopes
                   if rights(principal, s.org, s.repository, s.anonymous_pull).verdict is Verdict.ALLOW})
