"""The /v2 guard and token endpoint: the Docker token flow (and Basic on /v2) that every container client speaks.

The guard runs in the OCI handler right after routing (it needs the org the path means, which one
lookup already found), and asks the domain policy (domain/access.py) for the decision:

- no credentials, org open: allowed at once (the warm path reads one setting, nothing else);
- no credentials, org protected: 401 with `WWW-Authenticate: Bearer realm=".../v2/token",service,scope`;
- Basic credentials: verified once per `ttl` (Authenticator), then the account's rights decide, 403 if none;
- a Bearer token (GET /v2/token): verified once, then its grants decide; a missing grant is
  401 with `error="insufficient_scope"`, as distribution answers.
A refused GET (manifest, blob, referrers, tag list) is recorded as a pull with result `denied` and the reason, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass

from litestar import Request, Response, get
from litestar.di import NamedDependency

from application.authentication import Authenticator, Scope, grants
from application.pull_audit import Client
from application.pull_metrics import CountedManifests
from application.routing import OrgRouter
from domain.access import ANONYMOUS_PRINCIPAL, Decision, Principal, Verdict, may_pull
from domain.names import InvalidName
from application.errors import OrgUnknown, ReadModelUnavailable
from interfaces.http.errors import API_VERSION, OciError

log = logging.getLogger(__name__)
SERVICE = "entrepot"
MAX_SCOPES = 16
MAX_USERNAME = 200      # what a refused attempt records of a username it could not verify


@dataclass(frozen=True)
class ClientAccess:
    """What the guard and the token endpoint use: the authenticator, the router, the audited manifests."""

    authenticator: Authenticator
    router: OrgRouter
    audit: CountedManifests


def realm(request: Request) -> str:
    """The token endpoint on this server, as the client reached it (a proxy in front sets Host)."""
    host = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == b"host"), "") or "localhost"
    scheme = request.scope.get("scheme", "http")
    return f"{scheme}://{host}/v2/token"


def challenge(request: Request, scope: str = "", error: str = "") -> dict[str, str]:
    value = f'Bearer realm="{realm(request)}",service="{SERVICE}"'
    if scope:
        value += f',scope="{scope}"'
    if error:
        value += f',error="{error}"'
    return {"WWW-Authenticate": value}


def pull_scope(org: str, repository: str) -> str:
    return f"repository:{org}/{repository}:pull"


def authorization(request: Request) -> str:
    for key, value in request.scope["headers"]:
        if key == b"authorization":
            return value.decode("latin-1")
    return ""


def basic_credentials(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, secret = decoded.partition(":")
    return (username, secret) if colon else None


class Unauthenticated(Exception):
    """Credentials were sent and are wrong; `username` is what was claimed (never the secret)."""

    def __init__(self, username: str) -> None:
        # What a client claimed goes into the audit: bounded and printable.
        username = "".join(c if c.isprintable() else "?" for c in username[:MAX_USERNAME])
        super().__init__(f"authentication failed for {username!r}")
        self.username = username


async def principal_of(request: Request, authenticator: Authenticator) -> Principal:
    """Who sent the request: anonymous without an Authorization header, else the verified account or token."""
    value = authorization(request)
    if not value:
        return ANONYMOUS_PRINCIPAL
    scheme, _, credentials = value.partition(" ")
    scheme = scheme.lower()
    if scheme == "basic":
        pair = basic_credentials(credentials)
        if pair is None:
            raise Unauthenticated("")
        principal = await authenticator.basic(*pair)
        if principal is None:
            raise Unauthenticated(pair[0])
        return principal
    if scheme == "bearer":
        principal = authenticator.bearer(credentials.strip())
        if principal is None:
            raise Unauthenticated("(bearer token)")
        return principal
    raise Unauthenticated("")


async def guard_pull(request: Request, access: ClientAccess, org, repository: str,
                     audit_as: Callable[[], str] | None) -> Principal:
    """The principal allowed to pull `repository` of `org` (an OrgConfig), else OciError 401/403.

    `audit_as`: for a GET, what a refusal is recorded as in the pull audit (the manifest reference,
    the blob digest, `referrers:<digest>`, `tags/list`); it validates the request's reference first,
    so bad input is a 400 that records nothing. None (HEAD): refusals are not recorded.
    """
    if not authorization(request):                    # the warm path of an open org: one attribute read
        if org.anonymous_pull:
            return ANONYMOUS_PRINCIPAL
        decision = Decision(Verdict.CHALLENGE)         # the first step of every client's token flow: not audited
        raise refusal(request, org.name, repository, decision)
    try:
        principal = await principal_of(request, access.authenticator)
    except Unauthenticated as error:
        if audit_as is not None:
            await access.audit.denied(org, repository, audit_as(), client_of(request, error.username),
                                      str(error), 401, "UNAUTHORIZED")
        raise OciError("UNAUTHORIZED", 401, "authentication required: the credentials are not valid",
                       headers=challenge(request, pull_scope(org.name, repository))) from None
    decision = may_pull(principal, org.name, repository, org.anonymous_pull)
    if decision.allowed:
        return principal
    error = refusal(request, org.name, repository, decision)
    if audit_as is not None:
        await access.audit.denied(org, repository, audit_as(), client_of(request, principal.actor),
                                  decision.reason, error.status, error.code)
    raise error


def refusal(request: Request, org: str, repository: str, decision: Decision) -> OciError:
    scope = pull_scope(org, repository)
    if decision.verdict is Verdict.DENY:
        return OciError("DENIED", 403, decision.reason or "requested access to the resource is denied")
    if decision.verdict is Verdict.INSUFFICIENT_SCOPE:   # distribution: UNAUTHORIZED, error="insufficient_scope"
        return OciError("UNAUTHORIZED", 401, decision.reason,
                        headers=challenge(request, scope, "insufficient_scope"))
    return OciError("UNAUTHORIZED", 401, "authentication required", headers=challenge(request, scope))


def client_of(request: Request, actor: str) -> Client:
    user_agent = next((v.decode("latin-1") for k, v in request.scope["headers"] if k == b"user-agent"), "")
    return Client(address=request.client.host if request.client else "", user_agent=user_agent, actor=actor)


async def version_guard(request: Request, access: ClientAccess | None) -> None:
    """GET /v2/: credentials sent must be valid; none sent gets the challenge unless every org is open.

    Not "unless some org is open": containers/image (skopeo, podman, CRI-O) learns whether and how to
    authenticate from this ping only, and never sends credentials after a 200 here, so one protected org
    means every anonymous ping is challenged. Anonymous clients of an open org then take an anonymous
    token (GET /v2/token without credentials), as with Docker Hub.
    """
    if access is None:
        return
    if authorization(request):
        try:
            await principal_of(request, access.authenticator)
        except Unauthenticated:
            raise OciError("UNAUTHORIZED", 401, "authentication required: the credentials are not valid",
                           headers=challenge(request)) from None
        return
    try:
        all_open = await access.router.all_open()
    except ReadModelUnavailable:   # the orgs cannot be read yet (database down at start): answer as before
        return
    if not all_open:
        raise OciError("UNAUTHORIZED", 401, "authentication required", headers=challenge(request))


def requested_scopes(request: Request) -> list[str]:
    scopes = []
    for value in request.query_params.getall("scope", []):
        scopes += value.split()
    return scopes[:MAX_SCOPES]


async def resolve_scopes(router: OrgRouter, requested: list[str]) -> list[Scope]:
    """`repository:<name>:<actions>` asking for pull, routed as /v2/<name>/ would be; others are ignored."""
    scopes = []
    for text in requested:
        kind, _, rest = text.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or "pull" not in actions.split(",") or not name:
            continue
        try:
            route = await router.route(name)
        except (InvalidName, OrgUnknown, ReadModelUnavailable):
            continue
        scopes.append(Scope(name, route.org, route.repository, bool(route.config.anonymous_pull), route.config))
    return scopes


@get("/v2/token", include_in_schema=False)
async def token(request: Request, client_access: NamedDependency[ClientAccess]) -> Response:
    """The token endpoint: Basic credentials or none; answers a short-lived JWT granting what the account may pull."""
    scopes = await resolve_scopes(client_access.router, requested_scopes(request))
    try:
        # Basic or nothing: a token is never exchanged for another one, so a disabled account's last
        # token cannot be refreshed past its expiry.
        principal = ANONYMOUS_PRINCIPAL if authorization(request).lower().startswith("bearer ") else \
            await principal_of(request, client_access.authenticator)
    except Unauthenticated as error:
        for scope in scopes:   # failed authentication is audited, once per repository it asked for
            await client_access.audit.denied(scope.config or scope.org, scope.repository, "", client_of(request, error.username),
                                              str(error), 401, "UNAUTHORIZED")
        raise OciError("UNAUTHORIZED", 401, "authentication failed: the credentials are not valid",
                       headers={"WWW-Authenticate": f'Basic realm="{SERVICE}"'}) from None
    issued = client_access.authenticator.tokens.issue(principal.actor, principal.role.value, principal.org,
                                                     grants(principal, scopes))
    body = {"token": issued.token, "access_token": issued.token, "expires_in": issued.expires_in,
            "issued_at": issued.issued_at}
    return Response(body, headers={**API_VERSION, "Cache-Control": "no-store"})
