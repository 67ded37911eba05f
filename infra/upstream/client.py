"""HttpUpstream: the Upstream port over httpx, mapping every transport or HTTP failure to an Upstream* error."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import anyio.to_thread
import httpcore
import httpx

from application.errors import ManifestTooLarge, UpstreamBadContent, UpstreamRefused
from application.ports import UpstreamManifest, UpstreamManifestHead, UpstreamReferrers, UpstreamTarget
from domain.manifest import OCI_INDEX, InvalidManifest
from domain.referrers import Descriptor, read_referrers_index
from infra.upstream import headers
from infra.upstream.auth import RegistryAuth, TokenCache
from infra.upstream.errors import error_for, transport_errors
from infra.upstream.egress import EgressProxy
from infra.upstream.guard import POLICY, BlockingGuardedTransport, GuardedTransport, UpstreamGuard

MAX_MANIFEST_BYTES = 4 * 1024 * 1024        # what the distribution spec says a registry must accept
MAX_ERROR_BODY = 16 * 1024
MAX_TAGS_PAGE_BYTES = 16 * 1024 * 1024
MAX_TAG_PAGES = 10_000
MAX_REFERRER_PAGES = 100     # of up to 4 MiB each: far past any real list, short of an endless one
MAX_REFERRERS = 10_000       # descriptors read from one upstream list; paging stops there
DIGEST = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
TIMEOUT = httpx.Timeout(connect=5, read=30, write=30, pool=10)
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=32, keepalive_expiry=30)
USER_AGENT = "entrepot/0.1"
# httpcore reads an HTTP/1.1 body 64 KiB at a time (a class constant with no public setting), while
# the event loop hands over up to 256 KiB per socket read: each read was cut into four, each piece
# copied again and carried through every async layer (httpcore, httpx, ours) on its own. Up to 1 MiB
# a read, a cold blob crosses those layers in a quarter of the steps (bench/results/*-cold-reads.json).
UPSTREAM_READ_BYTES = 1024 * 1024
for _connection in (httpcore.AsyncHTTP11Connection, httpcore.HTTP11Connection):
    if getattr(_connection, "READ_NUM_BYTES", 0) < UPSTREAM_READ_BYTES:
        _connection.READ_NUM_BYTES = UPSTREAM_READ_BYTES
# Cold blob bodies read at once by worker threads (see BlockingHttpBlob); past that, on the event loop.
MAX_BLOCKING_BODIES = 16


async def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The decoded body, or ManifestTooLarge once it passes `limit` (keeping at most limit+1 bytes)."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ManifestTooLarge(f"{what} is {declared} bytes, more than {limit}")
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk[: limit + 1 - size])
        size += len(chunks[-1])
        if size > limit:
            raise ManifestTooLarge(f"{what} is more than {limit} bytes")
    return b"".join(chunks)


def _read_capped_blocking(response: httpx.Response, limit: int) -> bytes:
    """An error answer's body, at most `limit` bytes (past it: none, as read_capped's callers do)."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b""
    return b"".join(chunks)


def same_origin(url: httpx.URL, base: httpx.URL) -> bool:
    return (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)


def verified_digest(content: bytes, reference: str, sent_digest: str, where: str) -> str:
    """sha256 of `content`, after checking it against a digest reference and the upstream's own claim."""
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    if match := DIGEST.match(reference):
        algorithm, expected = match[1], match[2]
        if algorithm not in ("sha256", "sha384", "sha512"):
            raise UpstreamBadContent(f"cannot verify {algorithm} digest of {where}")
        if hashlib.new(algorithm, content).hexdigest() != expected:
            raise UpstreamBadContent(f"{where}: content does not match the requested digest")
    if sent_digest.startswith("sha256:") and sent_digest != digest:
        raise UpstreamBadContent(f"{where}: content does not match Docker-Content-Digest {sent_digest}")
    return digest


class HttpBlob:
    """An open upstream blob: raw (undecoded) bytes, once; always aclose() it."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._host = response.request.url.netloc.decode()
        declared = response.headers.get("Content-Length", "")
        self.size = int(declared) if declared.isdigit() else None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        with transport_errors(self._host):
            async for chunk in self._response.aiter_raw():
                yield chunk

    async def aclose(self) -> None:
        with transport_errors(self._host):
            await self._response.aclose()


class BlockingHttpBlob:
    """An open upstream blob whose body a worker thread reads (`blocking_chunks`), off the event loop:
    socket reads, and the caller's hashing and file writes, then run without the GIL, and the loop
    is not woken per network chunk. Iterated with `async for`, each chunk is read in a thread."""

    def __init__(self, response: httpx.Response, release: Callable[[], None]) -> None:
        self._response = response
        self._host = response.request.url.netloc.decode()
        self._release = release
        declared = response.headers.get("Content-Length", "")
        self.size = int(declared) if declared.isdigit() else None

    def blocking_chunks(self) -> Iterator[bytes]:
        """The raw bytes, for one worker thread; Upstream* errors as the async iteration raises them.
        Read to its end, the response is closed there too (its connection back in the pool), so that
        aclose() needs no thread."""
        with transport_errors(self._host):
            yield from self._response.iter_raw()
            self._response.close()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        chunks = self.blocking_chunks()
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk

    async def aclose(self) -> None:
        try:
            if not self._response.is_closed:
                with transport_errors(self._host):
                    await anyio.to_thread.run_sync(self._response.close)
        finally:
            self._release()


class HttpUpstream:
    """The Upstream port: manifests, blobs and tags from any distribution-API registry."""

    def __init__(self, client: httpx.AsyncClient | None = None, *, tag_page_size: int = 100,
                 max_manifest_bytes: int = MAX_MANIFEST_BYTES, tokens: TokenCache | None = None,
                 connect_timeout: float | None = None, read_timeout: float | None = None,
                 guard: UpstreamGuard | None = None, egress: EgressProxy = EgressProxy()) -> None:
        """`guard`: the SSRF policy per org (default: every org is the operator's own, so loopback and
        private networks are reachable, link-local and metadata never). An injected `client` keeps its
        own transport: the policy then travels with each request, but only a GuardedTransport enforces it.
        `egress`: the outbound proxy requests go through (infra/upstream/egress.py); none by default."""
        self._owns_client = client is None
        self._guard = guard or UpstreamGuard()
        timeout = TIMEOUT
        if connect_timeout is not None or read_timeout is not None:
            timeout = httpx.Timeout(connect=connect_timeout or TIMEOUT.connect, read=read_timeout or TIMEOUT.read,
                                    write=TIMEOUT.write, pool=TIMEOUT.pool)
        self._client = client or httpx.AsyncClient(
            timeout=timeout, headers={"User-Agent": USER_AGENT},
            transport=GuardedTransport(httpx.AsyncHTTPTransport(limits=LIMITS), via=self._guard.via, egress=egress,
                                       proxied=lambda proxy: httpx.AsyncHTTPTransport(proxy=proxy, limits=LIMITS)))
        # Blob bodies go through a blocking client read by worker threads (BlockingHttpBlob), with the
        # same guard and egress; an injected client (tests, library users) keeps every request async.
        self._blocking: httpx.Client | None = None if client is not None else httpx.Client(
            timeout=timeout, headers={"User-Agent": USER_AGENT},
            transport=BlockingGuardedTransport(httpx.HTTPTransport(limits=LIMITS), via=self._guard.via, egress=egress,
                                               proxied=lambda proxy: httpx.HTTPTransport(proxy=proxy, limits=LIMITS)))
        self._blocking_bodies = 0
        self._tokens = tokens or TokenCache()
        self._tag_page_size = tag_page_size
        self._max_manifest_bytes = max_manifest_bytes

    async def _send(self, target: UpstreamTarget, method: str, url: str | httpx.URL, what: str,
                    request_headers: dict[str, str]) -> httpx.Response:
        """A streamed 2xx response (the caller closes it), or the mapped error with the response closed."""
        with transport_errors(target.base_url[:200]):
            host = httpx.URL(target.base_url).netloc.decode()  # inside: a malformed upstream URL raises here
        policy = self._guard.policy_for(target.org, target.base_url)
        with transport_errors(host):
            # The policy rides on the request, and on every redirect httpx builds from it.
            request = self._client.build_request(method, url, headers=request_headers, extensions={POLICY: policy})
            auth = RegistryAuth(self._tokens, target.username, target.password, policy=policy,
                                upstream=httpx.URL(target.base_url))
            response = await self._client.send(request, auth=auth, stream=True, follow_redirects=True)
            if response.is_success:
                return response
            try:
                body = b"" if method == "HEAD" else await read_capped(response, MAX_ERROR_BODY, what)
            except ManifestTooLarge:
                body = b""
            finally:
                await response.aclose()
        raise error_for(response, what, body)

    @staticmethod
    async def _read_and_close(response: httpx.Response, limit: int, what: str) -> bytes:
        with transport_errors(response.request.url.netloc.decode()):
            try:
                return await read_capped(response, limit, what)
            finally:
                await response.aclose()

    @staticmethod
    def _url(target: UpstreamTarget, kind: str, reference: str) -> str:
        return f"{target.base_url.rstrip('/')}/v2/{target.repository}/{kind}/{reference}"

    @staticmethod
    def _what(target: UpstreamTarget, reference: str) -> str:
        return f"manifest {target.repository}{'@' if DIGEST.match(reference) else ':'}{reference}"

    async def get_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifest:
        what = self._what(target, reference)
        response = await self._send(target, "GET", self._url(target, "manifests", reference), what,
                                    {"Accept": headers.accept_header(accept)})
        content = await self._read_and_close(response, self._max_manifest_bytes, what)
        digest = verified_digest(content, reference, response.headers.get("Docker-Content-Digest", ""), what)
        return UpstreamManifest(content, headers.media_type(response, content), digest,
                                headers.rate_limit(response.headers))

    async def head_manifest(self, target: UpstreamTarget, reference: str, accept: list[str]) -> UpstreamManifestHead:
        what = self._what(target, reference)
        response = await self._send(target, "HEAD", self._url(target, "manifests", reference), what,
                                    {"Accept": headers.accept_header(accept)})
        with transport_errors(response.request.url.netloc.decode()):
            await response.aclose()
        declared = response.headers.get("Content-Length", "")
        size = int(declared) if declared.isdigit() else None
        if size is not None and size > self._max_manifest_bytes:
            raise ManifestTooLarge(f"{what} is {size} bytes, more than {self._max_manifest_bytes}")
        digest = response.headers.get("Docker-Content-Digest", "").strip()
        media_type = headers.media_type(response)
        if not DIGEST.match(digest) or media_type in headers.GENERIC_TYPES:
            # Without the digest (or a usable type) the HEAD says too little: fetch and compute.
            manifest = await self.get_manifest(target, reference, accept)
            return UpstreamManifestHead(manifest.digest, manifest.media_type, len(manifest.content),
                                        manifest.rate_limit)
        if DIGEST.match(reference) and digest != reference:
            raise UpstreamBadContent(f"{what}: upstream names it {digest}")
        return UpstreamManifestHead(digest, media_type, size, headers.rate_limit(response.headers))

    async def head_blob(self, target: UpstreamTarget, digest: str) -> int | None:
        response = await self._send(target, "HEAD", self._url(target, "blobs", digest),
                                    f"blob {target.repository}@{digest}", {"Accept-Encoding": "identity"})
        with transport_errors(response.request.url.netloc.decode()):
            await response.aclose()
        declared = response.headers.get("Content-Length", "")
        return int(declared) if declared.isdigit() else None

    async def open_blob(self, target: UpstreamTarget, digest: str) -> HttpBlob | BlockingHttpBlob:
        # identity: the bytes must reach us exactly as stored, or the digest will not match.
        url, what, request_headers = self._url(target, "blobs", digest), f"blob {target.repository}@{digest}", \
            {"Accept-Encoding": "identity"}
        if self._blocking is None or self._blocking_bodies >= MAX_BLOCKING_BODIES:
            return HttpBlob(await self._send(target, "GET", url, what, request_headers))
        self._blocking_bodies += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self._blocking_bodies -= 1
        try:
            # abandon_on_cancel=False: a cancelled open still ends with the response in hand, closed below.
            response = await anyio.to_thread.run_sync(self._send_blocking, target, url, what, request_headers)
        except BaseException:
            release()
            raise
        return BlockingHttpBlob(response, release)

    def _send_blocking(self, target: UpstreamTarget, url: str, what: str,
                       request_headers: dict[str, str]) -> httpx.Response:
        """_send over the blocking client, in a worker thread."""
        assert self._blocking is not None
        with transport_errors(target.base_url[:200]):
            host = httpx.URL(target.base_url).netloc.decode()
        policy = self._guard.policy_for(target.org, target.base_url)
        with transport_errors(host):
            request = self._blocking.build_request("GET", url, headers=request_headers,
                                                   extensions={POLICY: policy})
            auth = RegistryAuth(self._tokens, target.username, target.password, policy=policy,
                                upstream=httpx.URL(target.base_url))
            response = self._blocking.send(request, auth=auth, stream=True, follow_redirects=True)
            if response.is_success:
                return response
            try:
                body = _read_capped_blocking(response, MAX_ERROR_BODY)
            finally:
                response.close()
        raise error_for(response, what, body)

    async def list_tags(self, target: UpstreamTarget) -> list[str]:
        with transport_errors(target.base_url[:200]):
            url = httpx.URL(f"{target.base_url.rstrip('/')}/v2/{target.repository}/tags/list",
                            params={"n": self._tag_page_size})
        tags: list[str] = []
        seen: set[httpx.URL] = set()
        while url not in seen and len(seen) < MAX_TAG_PAGES:
            seen.add(url)
            response = await self._send(target, "GET", url, f"tags of {target.repository}",
                                        {"Accept": "application/json"})
            try:
                body = await self._read_and_close(response, MAX_TAGS_PAGE_BYTES, f"tag list of {target.repository}")
            except ManifestTooLarge as error:
                raise UpstreamBadContent(error.message) from None
            try:
                page = json.loads(body).get("tags") or []
            except (ValueError, AttributeError):
                raise UpstreamBadContent(f"tag list of {target.repository} is not JSON") from None
            tags.extend(str(tag) for tag in page)
            link = headers.next_link(response)
            if not link:
                return tags
            with transport_errors(response.url.netloc.decode()):
                url = response.url.join(link)  # the upstream's Link may be malformed
            if not same_origin(url, httpx.URL(target.base_url)):
                raise UpstreamRefused(f"tag list of {target.repository}: upstream's Link leads off its own host "
                                      f"({url.scheme}://{url.netloc.decode(errors='replace')[:200]})")
        return tags

    async def get_referrers(self, target: UpstreamTarget, digest: str) -> UpstreamReferrers:
        """Every page of the upstream's referrers list, unfiltered (the cache filters, so one answer
        serves every artifactType). A registry without the API answers 404: UpstreamNotFound."""
        what = f"referrers of {target.repository}@{digest}"
        url = httpx.URL(self._url(target, "referrers", digest))
        descriptors: list[Descriptor] = []
        seen: set[httpx.URL] = set()
        rate_limit = None
        while url not in seen and len(seen) < MAX_REFERRER_PAGES:
            seen.add(url)
            response = await self._send(target, "GET", url, what, {"Accept": OCI_INDEX})
            content = await self._read_and_close(response, self._max_manifest_bytes, what)
            rate_limit = rate_limit or headers.rate_limit(response.headers)
            try:
                descriptors += read_referrers_index(content)
            except InvalidManifest as error:
                raise UpstreamBadContent(f"upstream answered {what} with no referrers list: {error}") from None
            link = headers.next_link(response)
            if not link or len(descriptors) >= MAX_REFERRERS:
                break
            with transport_errors(response.url.netloc.decode()):
                url = response.url.join(link)
            if not same_origin(url, httpx.URL(target.base_url)):
                raise UpstreamRefused(f"{what}: upstream's Link leads off its own host "
                                      f"({url.scheme}://{url.netloc.decode(errors='replace')[:200]})")
        return UpstreamReferrers(descriptors[:MAX_REFERRERS], rate_limit)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
        if self._blocking is not None:
            self._blocking.close()

    async def __aenter__(self) -> HttpUpstream:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()
