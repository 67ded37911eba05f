"""Registry authentication as an httpx.Auth: answers Basic and Bearer (token) challenges, caching tokens."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass, field

import httpx

from application.errors import UpstreamBadContent, UpstreamRateLimited, UpstreamUnauthorized, UpstreamUnavailable
from domain.upstream_policy import OPERATOR, UpstreamPolicy
from infra.upstream.guard import POLICY

REPOSITORY_PATH = re.compile(r"/v2/(.+)/(?:manifests|blobs|tags)/")
CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')
DEFAULT_TOKEN_SECONDS = 60          # the token spec's default when expires_in is absent
MAX_CACHED_TOKENS = 10_000


@dataclass
class TokenCache:
    """Tokens shared by every request of one HttpUpstream, keyed by (host, credentials, scope).

    The credentials (a digest of them) are part of the key so an org never borrows a token obtained
    with another org's credentials, nor an anonymous org a credentialed one's.
    """

    clock: Callable[[], float] = time.monotonic
    tokens: dict[tuple, tuple[str, float]] = field(default_factory=dict)
    basic_hosts: set[tuple[str, str]] = field(default_factory=set)     # (host, credentials) answered Basic

    def get(self, key: tuple) -> str | None:
        entry = self.tokens.get(key)
        if entry and entry[1] > self.clock():
            return entry[0]
        self.tokens.pop(key, None)
        return None

    def put(self, key: tuple, token: str, expires_in: float) -> None:
        if len(self.tokens) >= MAX_CACHED_TOKENS:
            now = self.clock()
            self.tokens = {k: v for k, v in self.tokens.items() if v[1] > now}
        # Renew early so a token never expires between our check and the upstream's.
        lifetime = max(expires_in - 10, expires_in / 2)
        self.tokens[key] = (token, self.clock() + lifetime)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="..."` -> ("bearer", {"realm": ..., "service": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def request_scope(request: httpx.Request) -> str | None:
    match = REPOSITORY_PATH.match(request.url.path)
    return f"repository:{match[1]}:pull" if match else None


class RegistryAuth(httpx.Auth):
    """Per-target credentials over a shared TokenCache; retries a request exactly once after a challenge."""

    def __init__(self, cache: TokenCache, username: str = "", password: str = "", *,
                 policy: UpstreamPolicy = OPERATOR, upstream: httpx.URL | None = None) -> None:
        """`policy`: the SSRF policy token requests obey too; `upstream`: the org's registry, the one
        host besides https realms our credentials may be sent to in the clear."""
        self.cache = cache
        self.policy = policy
        self.upstream = upstream
        self.username = username
        self.password = password
        self.identity = hashlib.sha256(f"{username}\0{password}".encode()).hexdigest()[:32] if username else ""

    def _basic_header(self) -> str:
        return httpx.BasicAuth(self.username, self.password)._auth_header

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        host = request.url.netloc.decode()
        key = (host, self.identity, request_scope(request))
        if self.username and (host, self.identity) in self.cache.basic_hosts:
            request.headers["Authorization"] = self._basic_header()
        elif token := self.cache.get(key):
            request.headers["Authorization"] = f"Bearer {token}"

        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic" and self.username:
            if request.headers.get("Authorization") == self._basic_header():
                return                  # these very credentials were refused
            self.cache.basic_hosts.add((host, self.identity))
            request.headers["Authorization"] = self._basic_header()
        elif scheme == "bearer" and params.get("realm"):
            token_response = yield self._token_request(params, key[2])
            token, expires_in = self._read_token(token_response)
            self.cache.put(key, token, expires_in)
            request.headers["Authorization"] = f"Bearer {token}"
        else:
            return                      # nothing we can answer: the caller sees the 401
        yield request                   # the one retry; a second 401 reaches the caller

    def _token_request(self, params: dict[str, str], request_scope: str | None) -> httpx.Request:
        query = [("service", params["service"])] if params.get("service") else []
        scopes = params.get("scope", request_scope or "")
        query += [("scope", scope) for scope in scopes.split()]
        token_request = httpx.Request("GET", params["realm"], params=query, extensions={POLICY: self.policy})
        if self.username and self._may_send_credentials(token_request.url):
            token_request.headers["Authorization"] = self._basic_header()
        return token_request

    def _may_send_credentials(self, realm: httpx.URL) -> bool:
        """Over https, or to the upstream's own host; never in the clear to a host it merely names."""
        if realm.scheme == "https":
            return True
        return self.upstream is not None and (realm.host, realm.port) == (self.upstream.host, self.upstream.port)

    def _read_token(self, response: httpx.Response) -> tuple[str, float]:
        realm = response.request.url.host
        status = response.status_code
        if status in (401, 403):
            raise UpstreamUnauthorized(f"token endpoint {realm} refused the credentials ({status})", status=status)
        if status == 429:
            raise UpstreamRateLimited(f"token endpoint {realm} answered 429")
        if status >= 500:
            raise UpstreamUnavailable(f"token endpoint {realm} answered {status}", status=status)
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
            expires_in = float(body.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError):
            token = None
        if status != 200 or not isinstance(token, str) or not token:
            raise UpstreamBadContent(f"token endpoint {realm} gave no usable token ({status})", status=status)
        return token, expires_in

    # httpx drives the same flow; only the token response needs its (small) body read first.
    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        try:
            outgoing = next(flow)
            while True:
                response = yield outgoing
                if outgoing is not request:
                    response.read()
                outgoing = flow.send(response)
        except StopIteration:
            return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        try:
            outgoing = next(flow)
            while True:
                response = yield outgoing
                if outgoing is not request:
                    await response.aread()
                outgoing = flow.send(response)
        except StopIteration:
            return
