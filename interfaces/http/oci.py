"""The OCI distribution pull API: /v2/, manifests, blobs and tag lists, read-only, routed to an org."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlencode

from litestar import Request, Response, route
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream

from application.errors import LoopDetected
from application.pull_through import Client, PullThrough
from application.ports import Metrics
from application.orgs import OrgConfig
from application.routing import OrgRouter
from domain.manifest import OCI_INDEX
from domain.names import NAME_PATTERN, Digest, InvalidName, parse_reference
from domain.referrers import of_artifact_type, page, referrers_index
from interfaces.http.accel import AccelRedirect, accel_uri
from interfaces.http.answer import Answer
from interfaces.http.client_auth import ClientAccess, guard_pull, version_guard
from interfaces.http.errors import API_VERSION, OciError
from interfaces.http.pathsend import PathSend, offers_pathsend
from interfaces.http.ranges import parse_range

# The name grammar is anchored by what follows it: one regex for the whole path (Litestar's
# `:path` parameter must be last, so /v2/{name:path}/manifests/{ref} cannot be routed directly).
_OCI_PATH = re.compile(
    rf"^/(?P<name>{NAME_PATTERN})/(?:(?P<kind>manifests|blobs|referrers)/(?P<ref>[^/]+)|(?P<tags>tags/list))$")


@dataclass(frozen=True)
class Target:
    org: str
    repository: str
    kind: str        # "manifests" | "blobs" | "referrers" | "tags"
    reference: str
    name: str = ""   # the repository name as the client sent it (answers name it so)
    ns: str = ""     # the ?ns= the route honoured, echoed as OCI-Namespace
    config: OrgConfig | None = None   # the org's settings, looked up once by the router


def parse_path(rest: str) -> tuple[str, str, str]:
    """(name, kind, reference) of a /v2/<name>/... path; which org it means is the router's business."""
    match = _OCI_PATH.match(rest)
    if not match:
        if re.match(r"^/.+/(manifests|blobs|referrers)/[^/]+$|^/.+/tags/list$", rest):
            raise InvalidName(f"invalid repository name in {rest[:300]!r}")
        raise OciError("NAME_UNKNOWN", 404, f"no such endpoint: /v2{rest[:300]}")
    if match["tags"]:
        return match["name"], "tags", ""
    return match["name"], match["kind"], match["ref"]


def path_as_sent(raw: bytes) -> str | None:
    """The part after /v2 exactly as the client sent it, each segment percent-decoded on its own;
    None when the raw path is not under /v2/.

    Litestar hands the handler a normalised path (`%2F` decoded to `/`, `//` and a trailing `/`
    collapsed), which would answer `a%2Fb` or `a//b` as the repository `a/b`. The raw path keeps
    them, so they fail the name grammar. A segment that decodes to a `/` is no segment at all.
    """
    path = raw.decode("latin-1").partition("?")[0]
    if not path.startswith("/v2/"):
        return None
    if "%" not in path:   # nothing encoded: the path is its own segments
        return path[len("/v2"):]
    try:
        segments = [unquote(segment, errors="strict") if "%" in segment else segment
                    for segment in path[len("/v2"):].split("/")]
    except UnicodeDecodeError:
        raise InvalidName(f"invalid repository name in {path[:300]!r}: not UTF-8") from None
    if any("/" in segment for segment in segments):
        raise InvalidName(f"invalid repository name in {path[:300]!r}: an encoded / is not a path separator")
    return "/".join(segments)


@functools.lru_cache(maxsize=4096)
def _parsed_raw(raw: bytes) -> tuple[str, str, str] | None:
    """parse_path of a raw path, kept for the paths pulled again and again (a warm pull's decoding and
    name grammar cost it ~5 % of its CPU). Only valid paths are kept: errors are raised, never cached."""
    path = path_as_sent(raw)
    return None if path is None else parse_path(path)


def parsed_path(request: Request, rest: str) -> tuple[str, str, str]:
    """(name, kind, reference) of the request, read from the path as the client sent it (Litestar's
    `rest` only when the server gave no raw path)."""
    raw = request.scope.get("raw_path")
    return (raw and _parsed_raw(raw)) or parse_path(rest)


async def resolve(request: Request, services: OciServices, rest: str) -> Target:
    if services.via and services.via in header_values(request, b"entrepot-via"):
        # Our own upstream request came back to us: an org's upstream leads to this cluster.
        raise LoopDetected("request loop: an organization's upstream leads back to this server")
    name, kind, reference = parsed_path(request, rest)
    # Most pulls carry no query: Litestar's query_params would still build a MultiDict for each.
    ns = request.query_params.get("ns") if request.scope.get("query_string") else None
    route = await router_of(services).route(name, ns)
    return Target(route.org, route.repository, kind, reference, name, route.ns, route.config)


def namespace_header(target: Target) -> dict[str, str]:
    return {"OCI-Namespace": target.ns} if target.ns else {}


def header_values(request: Request, name: bytes) -> list[str]:
    """Every value of one request header, read from the ASGI scope (names arrive lower-case).

    Not `request.headers`: building Litestar's Headers runs typing's slow isinstance checks,
    a few percent of a warm pull's CPU, for the two or three headers a pull reads.
    """
    return [value.decode("latin-1") for key, value in request.scope["headers"] if key.lower() == name]


def header(request: Request, name: bytes, default: str | None = None) -> str | None:
    values = header_values(request, name)
    return values[0] if values else default


def accept_values(request: Request) -> list[str]:
    """Every media type the client accepts, from all its Accept lines (containers/image sends several)."""
    values = []
    for line in header_values(request, b"accept"):
        values += [value.strip() for value in line.split(",") if value.strip()]
    return values


@dataclass(frozen=True)
class OciServices:
    """What the pull API uses, injected as one dependency: one provider keeps the warm pull's cost down."""

    cache: PullThrough
    router: OrgRouter
    metrics: Metrics
    via: str = ""        # the hop header value our upstream requests carry (infra/upstream/guard.py)
    access: ClientAccess | None = None   # None: no access control (tools and tests that build no authenticator)
    accel: AccelRedirect | None = None   # nginx in front sends published blob files ([storage] accel_redirect)


def cache_of(services: OciServices) -> PullThrough:
    return services.cache


def router_of(services: OciServices) -> OrgRouter:
    return services.router


def metrics_of(services: OciServices) -> Metrics:
    return services.metrics


REFERRERS_PAGE = 500   # descriptors per referrers answer: far below the 4 MiB a client must accept of an index

# Every method is routed to our handlers, OPTIONS included: Litestar's automatic OPTIONS answer would
# advertise the methods below, and a read-only registry supports only GET and HEAD.
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def refuse_writes(request: Request) -> None:
    if request.method not in ("GET", "HEAD"):
        raise OciError("UNSUPPORTED", 405, "this registry is a read-only cache: only pulls are supported",
                       headers={"Allow": "GET, HEAD"})


def version_check(request: Request) -> Response:
    """The /v2/ answer clients probe before anything else; HEAD gets the headers without the body."""
    if request.method == "HEAD":  # the length of the GET's `{}`, without the body
        return Response(b"", headers={**API_VERSION, "Content-Length": "2"}, media_type="application/json")
    return Response({}, headers=API_VERSION)


@route("/v2/", http_method=EVERY_METHOD, status_code=200, include_in_schema=False)
async def api_version(request: Request, oci_services: NamedDependency[OciServices]) -> Response:
    refuse_writes(request)
    await version_guard(request, oci_services.access)
    return version_check(request)


@route("/v2/{rest:path}", http_method=EVERY_METHOD, status_code=200, include_in_schema=False)
async def oci(request: Request, rest: FromPath[str], oci_services: NamedDependency[OciServices]) -> Response:
    refuse_writes(request)
    if rest in ("", "/"):
        await version_guard(request, oci_services.access)
        return version_check(request)
    return await pull(request, oci_services, rest)


async def pull(request: Request, oci_services: OciServices, rest: str) -> Response:
    """The answer to a GET or HEAD of /v2<rest>: a manifest, a blob, a referrers list or a tag list.
    Reached through the route above, or straight from the app for manifests and blobs (interfaces/http/pull_route.py)."""
    target = await resolve(request, oci_services, rest)
    cache = cache_of(oci_services)
    actor = "anonymous"
    if oci_services.access is not None:
        audit_as = functools.partial(audited_reference, target) if request.method == "GET" else None
        actor = (await guard_pull(request, oci_services.access, target.config, target.repository, audit_as)).actor
    if target.kind == "manifests":
        return await manifest(request, cache, target, metrics_of(oci_services), actor)
    if target.kind == "blobs":
        return await blob(request, cache, target, metrics_of(oci_services), oci_services.accel)
    if target.kind == "referrers":
        return await referrers(request, cache, target, actor)
    return await tags(request, cache, target)


def audited_reference(target: Target) -> str:
    """What a refused GET is recorded as in the pull audit, once its reference is known valid (else a 400)."""
    if target.kind == "manifests":
        return str(parse_reference(target.reference))
    if target.kind == "tags":
        return "tags/list"
    digest = str(Digest.parse(target.reference))
    return f"referrers:{digest}" if target.kind == "referrers" else digest


def client_of(request: Request, actor: str = "anonymous") -> Client:
    return Client(address=request.client.host if request.client else "", user_agent=header(request, b"user-agent", ""),
                  actor=actor)


async def manifest(request: Request, cache: PullThrough, target: Target, metrics: Metrics,
                   actor: str = "anonymous") -> Response:
    reference = parse_reference(target.reference)
    head = request.method == "HEAD"
    client = client_of(request, actor)
    org = target.config
    answer = await cache.manifests.manifest(org, target.repository, reference, accept_values(request), client,
                                            record=not head)
    headers = {**API_VERSION, "Docker-Content-Digest": answer.digest, "X-Cache": answer.result.name,
               "Content-Length": str(len(answer.content)), **namespace_header(target)}
    if answer.warning:
        headers["Warning"] = f'110 entrepot "{answer.warning}"'
    if answer.not_kept:
        headers["X-Entrepot-Not-Kept"] = answer.not_kept
    if not head:
        metrics.bytes_served(target.org, "manifest", len(answer.content), target.repository)
    return Answer(b"" if head else answer.content, media_type=answer.media_type, headers=headers)


async def blob(request: Request, cache: PullThrough, target: Target, metrics: Metrics,
               accel: AccelRedirect | None = None) -> Response:
    org = target.config
    digest = Digest.parse(target.reference)
    if request.method == "HEAD":
        answer = await cache.blobs.blob_head(org, target.repository, digest)
    else:
        answer = await cache.blobs.blob(org, target.repository, digest)
    headers = {**API_VERSION, "Docker-Content-Digest": answer.digest, "X-Cache": answer.result.name,
               "Accept-Ranges": "bytes", **namespace_header(target)}
    if answer.redirect and request.method == "GET":  # the object store sends the bytes (and honours Range)
        return Response(None, status_code=307, headers={**headers, "Location": answer.redirect})
    byte_range = parse_range(header(request, b"range"), answer.size)   # a bad range is our 416, nginx or not
    if uri := accel_uri(accel, request, answer.path):
        # nginx sends the file (and honours the client's Range itself); we counted what it will send.
        start, end = byte_range or (0, answer.size)
        metrics.bytes_served(target.org, "blob", end - start, target.repository)
        return Answer(b"", media_type="application/octet-stream", headers={**headers, "X-Accel-Redirect": uri})
    status = 200
    start, end = 0, answer.size
    if byte_range is not None:
        start, end = byte_range
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{answer.size}"
    if end is not None:
        headers["Content-Length"] = str(end - start)
    if request.method == "HEAD":
        # The explicit length survives the empty body.
        return Answer(b"", status_code=status, media_type="application/octet-stream", headers=headers)
    if answer.path and byte_range is None and offers_pathsend(request.scope):
        # A published file, whole: the server (granian) sends it without the bytes entering Python.
        # Counted as sent in full: the server does not tell us if the client hangs up midway.
        metrics.bytes_served(target.org, "blob", answer.size, target.repository)
        return PathSend(answer.path, headers=headers)
    body = await started(answer.open(start, end))
    sent = counted(body, lambda size: metrics.bytes_served(target.org, "blob", size, target.repository))
    return Stream(sent, status_code=status, media_type="application/octet-stream", headers=headers)


async def started(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Wait for the first bytes before the status line goes out: a fill that fails before any
    byte is readable (a small corrupt blob, a stalled upstream) still gets a proper OCI error."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()
    return body()


async def counted(chunks: AsyncIterator[bytes], sent: Callable[[int], None]) -> AsyncIterator[bytes]:
    """The body, each chunk counted as it is handed to the server: by the time a client has the last
    byte the count is complete (a client that leaves midway may count one chunk it did not get)."""
    async for chunk in chunks:
        sent(len(chunk))
        yield chunk


def page_size(request: Request) -> int | None:
    """The `n` of a paged list: None when absent, a 400 when not a non-negative integer."""
    n_param = request.query_params.get("n")
    try:
        n = None if n_param is None else int(n_param)
    except ValueError:
        n = -1
    if n is not None and n < 0:
        raise OciError("PAGINATION_NUMBER_INVALID", 400, f"n must be a non-negative integer, got {n_param!r}")
    return n


async def tags(request: Request, cache: PullThrough, target: Target) -> Response:
    n, last = page_size(request), request.query_params.get("last")
    all_tags = await cache.tag_list.tags(target.config, target.repository)
    if last:
        all_tags = [tag for tag in all_tags if tag > last]
    page = all_tags if n is None else all_tags[:n]
    name = target.name
    headers = {**API_VERSION, **namespace_header(target)}
    if n is not None and len(all_tags) > n and page:
        # ns was checked to be a host[:port]; quoted anyway, as the upstream's tag names are
        ns = f"&ns={quote(target.ns, safe=':[]')}" if target.ns else ""
        headers["Link"] = f'</v2/{name}/tags/list?n={n}&last={quote(page[-1], safe="")}{ns}>; rel="next"'
    return Response({"name": name, "tags": page}, headers=headers)


async def referrers(request: Request, cache: PullThrough, target: Target, actor: str = "anonymous") -> Response:
    """OCI 1.1 `GET /v2/<name>/referrers/<digest>`: an image index of the manifests whose subject is
    the digest, filtered by `?artifactType=`, paged with `Link` past `n` (at most REFERRERS_PAGE)."""
    subject = str(Digest.parse(target.reference))
    artifact_type = request.query_params.get("artifactType") or None
    n = min(page_size(request) or REFERRERS_PAGE, REFERRERS_PAGE)
    last = request.query_params.get("last")
    head = request.method == "HEAD"
    answer = await cache.manifests.referrers(target.config, target.repository, subject, client_of(request, actor),
                                             record=not head)
    descriptors = answer.descriptors
    headers = {**API_VERSION, "X-Cache": answer.result.name, **namespace_header(target)}
    if artifact_type is not None:
        descriptors = of_artifact_type(descriptors, artifact_type)
        headers["OCI-Filters-Applied"] = "artifactType"
    chunk, more = page(descriptors, n, last)
    if more:
        query = {"n": str(n), "last": chunk[-1].digest, **({"artifactType": artifact_type} if artifact_type else {}),
                 **({"ns": target.ns} if target.ns else {})}
        headers["Link"] = f'</v2/{target.name}/referrers/{subject}?{urlencode(query)}>; rel="next"'
    if answer.warning:
        headers["Warning"] = f'110 entrepot "{answer.warning}"'
    body = referrers_index(chunk)
    headers["Content-Length"] = str(len(body))
    return Response(b"" if head else body, media_type=OCI_INDEX, headers=headers)
