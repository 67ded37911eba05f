"""The SSRF guard at the connection: every upstream request (redirects and token requests too) is resolved,
every address checked against the org's UpstreamPolicy, and sent to the checked address only.

Connecting to the address we checked, not to the name again, is what defeats DNS rebinding: the
request's URL is rewritten to the IP, with the Host header and the TLS server name kept.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable

import anyio
import httpx

from application.errors import UpstreamRefused
from domain.upstream_policy import OPERATOR, STRICT, Address, Network, UpstreamPolicy, host_literal
from infra.upstream.egress import EgressProxy

POLICY = "entrepot.upstream_policy"   # request extension: the UpstreamPolicy of the org asking
VIA = "Entrepot-Via"                  # hop header: which Entrepôt cluster sent the request (loop cut, 508)


class UpstreamGuard:
    """Which policy each org's upstream requests get, and the checks made when an admin sets an upstream.

    The config file's orgs are the operator's own: with the upstream the file gives them they may
    reach loopback and private networks. Any other (org, upstream) — made or changed through the
    admin API — may reach them only inside `allowed_networks`.
    """

    def __init__(self, allowed_networks: tuple[Network, ...] = (),
                 operator_upstreams: Iterable[tuple[str, str]] | None = None, via: str = "") -> None:
        """`operator_upstreams` None: every (org, upstream) is the operator's own (a library user's HttpUpstream)."""
        self._everyone_operator = operator_upstreams is None
        operator_upstreams = operator_upstreams or ()
        self.allowed_networks = allowed_networks
        self.operator_upstreams = frozenset(operator_upstreams)
        self.via = via
        self._admin = UpstreamPolicy(allowed_networks=allowed_networks)
        self._operator = UpstreamPolicy(allowed_networks=allowed_networks, internal_allowed=True)
        self.own_endpoints: set[tuple[Address, int]] = set()   # where this server listens (serving_on)
        self.everywhere_ports: set[int] = set()                # ... and ports it listens on at every address

    def policy_for(self, org: str, base_url: str) -> UpstreamPolicy:
        if self._everyone_operator or (org, base_url) in self.operator_upstreams:
            return self._operator
        return self._admin

    def serving_on(self, host: str, port: int) -> None:
        """This server's listening address: an upstream there is this server itself."""
        for address in _resolve_now(host, port) or ():
            if address.is_unspecified:   # 0.0.0.0 / ::: every local address, all of loopback at least
                self.everywhere_ports.add(port)
            else:
                self.own_endpoints.add((address, port))

    def upstream_refusal(self, org: str, base_url: str) -> str | None:
        """Why `base_url` may not be `org`'s upstream (checked when it is set), else None. Blocking (DNS).

        A name that does not resolve now is accepted: every connection is checked again anyway.
        """
        url = httpx.URL(base_url)
        port = url.port or (443 if url.scheme == "https" else 80)
        policy = self.policy_for(org, base_url)
        if refusal := policy.host_refusal(url.scheme, url.host):
            return refusal
        for address in _resolve_now(url.host, port) or ():
            if (address, port) in self.own_endpoints or (address.is_loopback and port in self.everywhere_ports):
                return "it is this server itself"
            if refusal := policy.address_refusal(address):
                return refusal
        return None


def _resolve_now(host: str, port: int) -> list[Address] | None:
    literal = host_literal(host)
    if literal is not None:
        return [literal]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


class _Guarded:
    """What both guarded transports do around the request: refuse by the policy, add the hop header,
    choose the egress proxy, and pin the request to the address that was checked."""

    def __init__(self, via: str, egress: EgressProxy) -> None:
        self._via = via
        self._egress = egress

    def _prepare(self, request: httpx.Request) -> tuple[UpstreamPolicy, str, httpx.Headers, str | None]:
        policy: UpstreamPolicy = request.extensions.get(POLICY, STRICT)
        url = request.url
        where = url.netloc.decode(errors="replace")[:200]
        if refusal := policy.host_refusal(url.scheme, url.host):
            raise UpstreamRefused(f"upstream {where} refused by the SSRF policy: {refusal}", upstream=where)
        headers = httpx.Headers(request.headers)
        if self._via:
            headers[VIA] = self._via
        return policy, where, headers, self._egress.proxy_for(request.url)

    @staticmethod
    def _proxied_request(request: httpx.Request, headers: httpx.Headers) -> httpx.Request:
        # Through the proxy the name travels as it is (the proxy connects); what we can check, we do.
        return httpx.Request(request.method, request.url, headers=headers, stream=request.stream,
                             extensions=dict(request.extensions))

    @staticmethod
    def _pinned_request(request: httpx.Request, headers: httpx.Headers, address: Address) -> httpx.Request:
        url = request.url
        extensions = dict(request.extensions)
        if url.scheme == "https" and host_literal(url.host) is None:
            extensions["sni_hostname"] = url.host   # TLS checks the certificate against the name, not the IP
        return httpx.Request(request.method, url.copy_with(host=str(address)), headers=headers,
                             stream=request.stream, extensions=extensions)

    @staticmethod
    def _judged(policy: UpstreamPolicy, request: httpx.Request, where: str, addresses: list[Address]) -> Address:
        """The first address once every one passed the policy."""
        # Every address must pass: a name answering one public and one internal address is refused.
        for address in addresses:
            if refusal := policy.address_refusal(address):
                raise UpstreamRefused(f"upstream {where} refused by the SSRF policy: {refusal}", upstream=where)
        if not addresses:
            raise httpx.ConnectError(f"cannot resolve {request.url.host}", request=request)
        return addresses[0]


def _addresses(infos: list) -> list[Address]:
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class GuardedTransport(_Guarded, httpx.AsyncBaseTransport):
    """An httpx transport that connects only to addresses the request's policy allows."""

    def __init__(self, inner: httpx.AsyncBaseTransport, via: str = "", egress: EgressProxy = EgressProxy(),
                 proxied: Callable[[str], httpx.AsyncBaseTransport] | None = None) -> None:
        """`egress`: the company's outbound proxy, if any; `proxied(url)` makes the transport through it."""
        super().__init__(via, egress)
        self._inner = inner
        self._make_proxied = proxied or (lambda proxy: httpx.AsyncHTTPTransport(proxy=proxy))
        self._proxied: dict[str, httpx.AsyncBaseTransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy, where, headers, proxy = self._prepare(request)
        if proxy is not None:
            await self._checked_address(policy, request, where, unresolvable_ok=True)
            return await self._through(proxy).handle_async_request(self._proxied_request(request, headers))
        address = await self._checked_address(policy, request, where)
        return await self._inner.handle_async_request(self._pinned_request(request, headers, address))

    @classmethod
    async def _checked_address(cls, policy: UpstreamPolicy, request: httpx.Request, where: str,
                               unresolvable_ok: bool = False) -> Address | None:
        """The first address of the request's host once every one passed the policy. `unresolvable_ok`
        (behind a proxy, which may resolve names this host cannot): None instead of a ConnectError."""
        url = request.url
        literal = host_literal(url.host)
        if literal is not None:
            return cls._judged(policy, request, where, [literal])
        try:
            infos = await anyio.getaddrinfo(url.host, url.port or 443, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            if unresolvable_ok:
                return None
            raise httpx.ConnectError(f"cannot resolve {url.host}: {error}", request=request) from None
        return cls._judged(policy, request, where, _addresses(infos))

    def _through(self, proxy: str) -> httpx.AsyncBaseTransport:
        if proxy not in self._proxied:
            self._proxied[proxy] = self._make_proxied(proxy)
        return self._proxied[proxy]

    async def aclose(self) -> None:
        await self._inner.aclose()
        for transport in self._proxied.values():
            await transport.aclose()


class BlockingGuardedTransport(_Guarded, httpx.BaseTransport):
    """GuardedTransport for a blocking client (used from worker threads): the same checks, the same pinning."""

    def __init__(self, inner: httpx.BaseTransport, via: str = "", egress: EgressProxy = EgressProxy(),
                 proxied: Callable[[str], httpx.BaseTransport] | None = None) -> None:
        super().__init__(via, egress)
        self._inner = inner
        self._make_proxied = proxied or (lambda proxy: httpx.HTTPTransport(proxy=proxy))
        self._proxied: dict[str, httpx.BaseTransport] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        policy, where, headers, proxy = self._prepare(request)
        if proxy is not None:
            self._checked_address(policy, request, where, unresolvable_ok=True)
            return self._through(proxy).handle_request(self._proxied_request(request, headers))
        address = self._checked_address(policy, request, where)
        return self._inner.handle_request(self._pinned_request(request, headers, address))

    @classmethod
    def _checked_address(cls, policy: UpstreamPolicy, request: httpx.Request, where: str,
                         unresolvable_ok: bool = False) -> Address | None:
        url = request.url
        literal = host_literal(url.host)
        if literal is not None:
            return cls._judged(policy, request, where, [literal])
        try:
            infos = socket.getaddrinfo(url.host, url.port or 443, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            if unresolvable_ok:
                return None
            raise httpx.ConnectError(f"cannot resolve {url.host}: {error}", request=request) from None
        return cls._judged(policy, request, where, _addresses(infos))

    def _through(self, proxy: str) -> httpx.BaseTransport:
        with self._lock:   # worker threads share the transport
            if proxy not in self._proxied:
                self._proxied[proxy] = self._make_proxied(proxy)
            return self._proxied[proxy]

    def close(self) -> None:
        self._inner.close()
        for transport in self._proxied.values():
            transport.close()


__all__ = ["OPERATOR", "POLICY", "VIA", "BlockingGuardedTransport", "GuardedTransport", "UpstreamGuard"]
