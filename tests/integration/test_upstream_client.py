"""HttpUpstream against a real distribution registry, and against small local servers for what it cannot do."""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import parse_qs, urlsplit

import anyio.to_thread
import httpx
import pytest

from application.errors import (
    ManifestTooLarge,
    UpstreamBadContent,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from application.ports import RateLimit, UpstreamTarget
from infra.upstream import HttpUpstream, RegistryAuth, TokenCache
from infra.upstream.client import MAX_BLOCKING_BODIES, BlockingHttpBlob, HttpBlob
from tests.support.httpserver import LocalHTTPServer, Reply, Request
from tests.support.images import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    build_image,
    build_index,
    push_image,
    put_manifest,
)

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ALL_TYPES = [DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def upstream(anyio_backend):
    client = HttpUpstream()
    yield client
    await client.aclose()


def target(base_url: str, repository: str = "team/app", username: str = "", password: str = "") -> UpstreamTarget:
    return UpstreamTarget("test", base_url, repository, username, password)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- a real docker-registry -------------------------------------------------------------------

async def test_manifest_by_tag_comes_back_as_pushed_with_every_accept_value(upstream, upstream_registry):
    image = build_image(1)
    push_image(upstream_registry.url, "team/app", "v1", image)

    manifest = await upstream.get_manifest(target(upstream_registry.url), "v1", ALL_TYPES)

    assert manifest.content == image.manifest_bytes            # not down-converted to schema1
    assert manifest.media_type == DOCKER_MANIFEST
    assert manifest.digest == image.manifest_digest
    assert manifest.rate_limit is None


async def test_manifest_without_accept_values_asks_for_every_manifest_type(upstream, upstream_registry):
    image = build_image(1, oci=True)
    push_image(upstream_registry.url, "team/app", "v1", image)

    manifest = await upstream.get_manifest(target(upstream_registry.url), "v1", [])

    assert (manifest.media_type, manifest.digest) == (OCI_MANIFEST, image.manifest_digest)


async def test_manifest_by_digest_is_verified(upstream, upstream_registry):
    image = build_image(2)
    push_image(upstream_registry.url, "team/app", None, image)

    manifest = await upstream.get_manifest(target(upstream_registry.url), image.manifest_digest, ALL_TYPES)

    assert manifest.content == image.manifest_bytes


@pytest.mark.parametrize("oci, media_type", [(True, OCI_INDEX), (False, DOCKER_MANIFEST_LIST)])
async def test_multi_arch_index_and_its_platform_manifests(upstream, upstream_registry, oci, media_type):
    index = build_index(3, oci=oci)
    push_image(upstream_registry.url, "team/multi", "v1", index)
    multi = target(upstream_registry.url, "team/multi")

    top = await upstream.get_manifest(multi, "v1", ALL_TYPES)
    arm = await upstream.get_manifest(multi, index.children[1].manifest_digest, ALL_TYPES)

    assert (top.media_type, top.digest, top.content) == (media_type, index.digest, index.bytes)
    assert arm.content == index.children[1].manifest_bytes


async def test_head_manifest_gives_digest_type_and_size_with_one_head(upstream, upstream_registry):
    image = build_image(4)
    push_image(upstream_registry.url, "team/app", "v1", image)
    upstream_registry.mark()

    head = await upstream.head_manifest(target(upstream_registry.url), "v1", ALL_TYPES)

    assert (head.digest, head.media_type, head.size) == (image.manifest_digest, DOCKER_MANIFEST,
                                                         len(image.manifest_bytes))
    assert upstream_registry.requests() == [("HEAD", "/v2/team/app/manifests/v1", 200)]


async def test_blob_streams_bytes_matching_its_digest_in_one_get(upstream, upstream_registry):
    image = build_image(5, layer_size=300_000)
    push_image(upstream_registry.url, "team/app", "v1", image)
    digest, data = image.layers[0]
    upstream_registry.mark()

    blob = await upstream.open_blob(target(upstream_registry.url), digest)
    try:
        received = b"".join([chunk async for chunk in blob])
    finally:
        await blob.aclose()

    assert blob.size == len(data)
    assert sha256(received) == digest
    assert upstream_registry.count("GET", f"/blobs/{digest}") == 1


async def test_blob_bodies_are_read_by_worker_threads_up_to_a_bound_then_on_the_loop(upstream, upstream_registry):
    image = build_image(6, layer_size=300_000)
    push_image(upstream_registry.url, "team/app", "v1", image)
    digest, data = image.layers[0]

    blobs = [await upstream.open_blob(target(upstream_registry.url), digest) for _ in range(MAX_BLOCKING_BODIES + 1)]
    try:
        threaded, past_the_bound = blobs[:-1], blobs[-1]
        assert all(isinstance(blob, BlockingHttpBlob) for blob in threaded)
        assert isinstance(past_the_bound, HttpBlob)   # no thread left for it: read on the event loop
        received = await anyio.to_thread.run_sync(lambda: b"".join(threaded[0].blocking_chunks()))
        assert sha256(received) == digest and len(received) == len(data)
        assert sha256(b"".join([chunk async for chunk in past_the_bound])) == digest
    finally:
        for blob in blobs:
            await blob.aclose()
    again = await upstream.open_blob(target(upstream_registry.url), digest)   # closed blobs gave their threads back
    await again.aclose()
    assert isinstance(again, BlockingHttpBlob)


async def test_all_tags_are_listed_in_pages(upstream, upstream_registry):
    image = build_image(6)
    push_image(upstream_registry.url, "team/app", "t000", image)
    with httpx.Client() as client:
        for number in range(1, 130):
            put_manifest(upstream_registry.url, "team/app", f"t{number:03}", image.manifest_bytes, image.media_type,
                         client=client)
    upstream_registry.mark()

    tags = await upstream.list_tags(target(upstream_registry.url))

    assert sorted(tags) == [f"t{number:03}" for number in range(130)]
    # distribution 2.8 ignores n= for tags and answers in one page; the pages are exercised below.
    assert upstream_registry.count("GET", "/tags/list?n=100") == 1


async def test_missing_things_raise_not_found(upstream, upstream_registry):
    push_image(upstream_registry.url, "team/app", "v1", build_image(7))
    app = target(upstream_registry.url)

    with pytest.raises(UpstreamNotFound, match="MANIFEST_UNKNOWN") as missing:
        await upstream.get_manifest(app, "nope", ALL_TYPES)
    with pytest.raises(UpstreamNotFound):
        await upstream.head_manifest(app, "nope", ALL_TYPES)
    with pytest.raises(UpstreamNotFound):
        await upstream.open_blob(app, sha256(b"never pushed"))
    with pytest.raises(UpstreamNotFound):
        await upstream.list_tags(target(upstream_registry.url, "team/none"))
    assert missing.value.status == 404


async def test_a_stopped_registry_is_unavailable_until_it_starts_again(upstream, upstream_registry):
    image = build_image(8)
    push_image(upstream_registry.url, "team/app", "v1", image)
    upstream_registry.stop()

    with pytest.raises(UpstreamUnavailable, match=f"127.0.0.1:{upstream_registry.port}") as down:
        await upstream.get_manifest(target(upstream_registry.url), "v1", ALL_TYPES)
    with pytest.raises(UpstreamUnavailable):
        await upstream.open_blob(target(upstream_registry.url), image.layers[0].digest)
    assert down.value.status is None

    upstream_registry.start()
    manifest = await upstream.get_manifest(target(upstream_registry.url), "v1", ALL_TYPES)
    assert manifest.digest == image.manifest_digest


async def test_basic_auth_registry_with_the_right_credentials(upstream, upstream_registry_with_auth):
    registry = upstream_registry_with_auth
    image = build_image(9)
    push_image(registry.url, "team/app", "v1", image, auth=registry.auth)
    app = target(registry.url, username="alice", password="s3cret")
    registry.mark()

    manifest = await upstream.get_manifest(app, "v1", ALL_TYPES)
    blob = await upstream.open_blob(app, image.config.digest)
    received = b"".join([chunk async for chunk in blob])
    await blob.aclose()
    tags = await upstream.list_tags(app)

    assert (manifest.digest, received, tags) == (image.manifest_digest, image.config.data, ["v1"])
    # One challenge, then the credentials go along unasked.
    assert [status for _, _, status in registry.requests()] == [401, 200, 200, 200]


async def test_basic_auth_registry_with_wrong_or_no_credentials(upstream, upstream_registry_with_auth):
    registry = upstream_registry_with_auth
    push_image(registry.url, "team/app", "v1", build_image(9), auth=registry.auth)

    with pytest.raises(UpstreamUnauthorized) as refused:
        await upstream.get_manifest(target(registry.url, username="alice", password="wrong"), "v1", ALL_TYPES)
    with pytest.raises(UpstreamUnauthorized):
        await upstream.get_manifest(target(registry.url), "v1", ALL_TYPES)
    assert refused.value.status == 401


# --- small local servers ----------------------------------------------------------------------

class TokenRegistry:
    """A registry that wants Bearer tokens from its own /token endpoint, paginates tags and can misbehave."""

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.image = build_image(10)
        self.issued: dict[str, str] = {}
        self.tags = [f"t{number:03}" for number in range(250)]
        self.manifest_headers: dict[str, str] = {}

    def token_requests(self, server: LocalHTTPServer) -> list[Request]:
        return [request for request in server.requests if request.path.startswith("/token")]

    def __call__(self, request: Request, server: LocalHTTPServer) -> Reply:
        url = urlsplit(request.path)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path == "/token":
            if self.credentials and request.headers.get("authorization") != httpx.BasicAuth(*self.credentials)._auth_header:
                return Reply(401)
            token = f"token-{len(self.issued)}"
            self.issued[token] = query.get("scope", "")
            return Reply(200, {"Content-Type": "application/json"}, json.dumps({"token": token, "expires_in": 300}).encode())

        repository = url.path.removeprefix("/v2/").split("/manifests/")[0].split("/tags/")[0]
        scope = f"repository:{repository}:pull"
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.issued.get(bearer) != scope:
            challenge = f'Bearer realm="{server.url}/token",service="local",scope="{scope}"'
            return Reply(401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
                         b'{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        if url.path.endswith("/tags/list"):
            size, last = int(query.get("n", 1000)), query.get("last", "")
            page = [tag for tag in self.tags if tag > last][:size]
            headers = {"Content-Type": "application/json"}
            if page and page[-1] != self.tags[-1]:
                headers["Link"] = f'</v2/{repository}/tags/list?n={size}&last={page[-1]}>; rel="next"'
            return Reply(200, headers, json.dumps({"name": repository, "tags": page}).encode())
        return Reply(200, {"Content-Type": DOCKER_MANIFEST, **self.manifest_headers}, self.image.manifest_bytes)


@pytest.fixture
def token_registry():
    registry = TokenRegistry(credentials=("alice", "s3cret"))
    with LocalHTTPServer(registry) as server:
        yield registry, server


async def test_bearer_token_is_fetched_once_with_basic_credentials_and_reused(upstream, token_registry):
    registry, server = token_registry
    app = target(server.url, username="alice", password="s3cret")

    first = await upstream.get_manifest(app, "v1", ALL_TYPES)
    second = await upstream.get_manifest(app, registry.image.manifest_digest, ALL_TYPES)

    assert first.digest == second.digest == registry.image.manifest_digest
    [token_request] = registry.token_requests(server)
    assert token_request.headers["authorization"] == httpx.BasicAuth("alice", "s3cret")._auth_header
    assert parse_qs(urlsplit(token_request.path).query) == {"service": ["local"], "scope": ["repository:team/app:pull"]}
    assert [r.headers.get("authorization", "")[:6] for r in server.requests if r.path.startswith("/v2/")] == [
        "", "Bearer", "Bearer"]
    assert server.requests[0].headers["accept"] == ", ".join(ALL_TYPES)


async def test_bearer_tokens_are_not_shared_between_credentials(upstream, token_registry):
    registry, server = token_registry
    await upstream.get_manifest(target(server.url, username="alice", password="s3cret"), "v1", ALL_TYPES)

    with pytest.raises(UpstreamUnauthorized, match="token endpoint"):
        await upstream.get_manifest(target(server.url, username="alice", password="wrong"), "v1", ALL_TYPES)
    with pytest.raises(UpstreamUnauthorized):
        await upstream.get_manifest(target(server.url), "v1", ALL_TYPES)
    assert len(registry.token_requests(server)) == 3


async def test_a_token_the_registry_keeps_refusing_is_retried_once(upstream, token_registry):
    registry, server = token_registry
    registry.issued = _Forgetful()

    with pytest.raises(UpstreamUnauthorized) as refused:
        await upstream.get_manifest(target(server.url, username="alice", password="s3cret"), "v1", ALL_TYPES)

    assert refused.value.status == 401
    assert len(registry.token_requests(server)) == 1
    assert len([r for r in server.requests if r.path.startswith("/v2/")]) == 2


class _Forgetful(dict):
    def get(self, key, default=None):
        return default


async def test_the_ping_challenge_without_scope_gets_an_anonymous_token():
    def handler(request: Request, server: LocalHTTPServer) -> Reply:
        if request.path.startswith("/token"):
            return Reply(200, {"Content-Type": "application/json"}, b'{"access_token": "anon"}')
        if request.headers.get("authorization") == "Bearer anon":
            return Reply(200, {"Content-Type": "application/json"}, b"{}")
        return Reply(401, {"WWW-Authenticate": f'Bearer realm="{server.url}/token",service="local"'})

    with LocalHTTPServer(handler) as server:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.url}/v2/", auth=RegistryAuth(TokenCache()))
        with httpx.Client() as client:          # the same flow drives a sync client
            sync_response = client.get(f"{server.url}/v2/", auth=RegistryAuth(TokenCache()))

    assert response.status_code == sync_response.status_code == 200
    token_request = server.requests[1]
    assert (token_request.path, token_request.headers.get("authorization")) == ("/token?service=local", None)


async def test_tags_follow_link_pagination(token_registry):
    registry, server = token_registry
    async with HttpUpstream(tag_page_size=100) as upstream:
        tags = await upstream.list_tags(target(server.url, username="alice", password="s3cret"))

    assert tags == registry.tags
    assert len([r for r in server.requests if "/tags/list" in r.path and r.headers.get("authorization")]) == 3


async def test_rate_limit_headers_are_parsed(upstream, token_registry):
    registry, server = token_registry
    registry.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"}

    manifest = await upstream.get_manifest(target(server.url, username="alice", password="s3cret"), "v1", ALL_TYPES)

    assert manifest.rate_limit == RateLimit(limit=100, remaining=76, window_seconds=21600)


def scripted(reply: Reply):
    return LocalHTTPServer(lambda request, server: reply)


async def test_429_raises_rate_limited_with_retry_after(upstream):
    reply = Reply(429, {"Retry-After": "7", "ratelimit-limit": "100", "ratelimit-remaining": "0"},
                  b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
    with scripted(reply) as server:
        with pytest.raises(UpstreamRateLimited, match="TOOMANYREQUESTS") as limited:
            await upstream.get_manifest(target(server.url), "v1", ALL_TYPES)

    assert (limited.value.status, limited.value.retry_after) == (429, 7)
    assert limited.value.detail["rate_limit"] == RateLimit(limit=100, remaining=0)


async def test_5xx_raises_unavailable_with_the_status(upstream):
    with scripted(Reply(503, body=b"busy")) as server:
        with pytest.raises(UpstreamUnavailable, match="503") as unavailable:
            await upstream.open_blob(target(server.url), sha256(b"x"))
    assert unavailable.value.status == 503


async def test_content_that_does_not_match_its_digest_is_refused(upstream):
    body = build_image(11).manifest_bytes
    claimed = sha256(b"something else")
    with scripted(Reply(200, {"Content-Type": DOCKER_MANIFEST, "Docker-Content-Digest": claimed}, body)) as server:
        with pytest.raises(UpstreamBadContent, match="Docker-Content-Digest"):
            await upstream.get_manifest(target(server.url), "v1", ALL_TYPES)
        with pytest.raises(UpstreamBadContent, match="requested digest"):
            await upstream.get_manifest(target(server.url), claimed, ALL_TYPES)


@pytest.mark.parametrize("content_length", [True, False])
async def test_manifests_over_4_mib_are_refused(upstream, content_length):
    body = b"{" + b" " * (4 * 1024 * 1024) + b"}"
    with scripted(Reply(200, {"Content-Type": DOCKER_MANIFEST}, body, content_length)) as server:
        with pytest.raises(ManifestTooLarge):
            await upstream.get_manifest(target(server.url), "v1", ALL_TYPES)


async def test_head_without_a_digest_falls_back_to_get(upstream):
    image = build_image(12)
    with scripted(Reply(200, {"Content-Type": DOCKER_MANIFEST}, image.manifest_bytes)) as server:
        head = await upstream.head_manifest(target(server.url), "v1", ALL_TYPES)
    assert (head.digest, head.size) == (image.manifest_digest, len(image.manifest_bytes))
    assert [request.method for request in server.requests] == ["HEAD", "GET"]


async def test_blob_redirects_are_followed_without_our_credentials():
    data = b"layer bytes" * 1000

    def registry_handler(request: Request, server: LocalHTTPServer) -> Reply:
        if "authorization" not in request.headers:
            return Reply(401, {"WWW-Authenticate": 'Basic realm="local"'})
        return Reply(307, {"Location": f"{cdn.url}/signed/blob?sig=abc"})

    with scripted(Reply(200, {"Content-Type": "application/octet-stream"}, data)) as cdn:
        with LocalHTTPServer(registry_handler) as registry:
            async with HttpUpstream() as upstream:
                blob = await upstream.open_blob(target(registry.url, username="alice", password="s3cret"), sha256(data))
                received = b"".join([chunk async for chunk in blob])
                await blob.aclose()

    assert (received, blob.size) == (data, len(data))
    assert registry.requests[1].headers["authorization"] == httpx.BasicAuth("alice", "s3cret")._auth_header
    assert [request.headers.get("authorization") for request in cdn.requests] == [None]
    assert cdn.requests[0].headers.get("accept-encoding") == "identity"


async def test_a_slow_upstream_times_out_as_unavailable():
    def slow(request: Request, server: LocalHTTPServer) -> Reply:
        time.sleep(0.5)
        return Reply(200)

    with LocalHTTPServer(slow) as server:
        async with httpx.AsyncClient(timeout=0.1) as client, HttpUpstream(client) as upstream:
            with pytest.raises(UpstreamUnavailable, match="timed out"):
                await upstream.get_manifest(target(server.url), "v1", ALL_TYPES)
