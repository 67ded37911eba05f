"""The egress proxy: where a company's network makes every outbound request go through an HTTP(S) proxy.

`[upstream] proxy` names it (one proxy for http:// and https:// upstreams) and `[upstream] no_proxy`
lists what is reached directly. Left empty, the standard environment variables are used, as curl,
Go's registries and (before the SSRF guard) httpx did: HTTPS_PROXY for https:// upstreams,
HTTP_PROXY for http:// ones, NO_PROXY for the exceptions. `proxy = "none"` ignores the environment.

The proxy is the operator's own: its address is not checked against the SSRF policy. The upstream
behind it still is (see GuardedTransport): its name is resolved here and every address checked; a
name this host cannot resolve is left to the proxy, whose own rules are then the last word.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

NONE = "none"   # `[upstream] proxy = "none"`: no proxy, whatever the environment says


@dataclass(frozen=True)
class EgressProxy:
    """Which proxy (if any) a request to an upstream URL goes through."""

    http: str = ""                    # proxy URL for http:// upstreams; "" direct
    https: str = ""                   # proxy URL for https:// upstreams; "" direct
    bypass: tuple[str, ...] = ()      # NO_PROXY entries: "*", a host, ".domain" / "domain", an IP or a CIDR

    def __bool__(self) -> bool:
        return bool(self.http or self.https)

    def proxy_for(self, url: httpx.URL) -> str | None:
        proxy = self.https if url.scheme == "https" else self.http
        if not proxy or self._bypassed(url.host):
            return None
        return proxy

    def _bypassed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        address = _address(host)
        for entry in self.bypass:
            if entry == "*":
                return True
            if address is not None:
                network = _network(entry)
                if network is not None and address in network:
                    return True
                continue
            domain = entry.lstrip(".")
            if host == domain or host.endswith("." + domain):
                return True
        return False


def egress_proxy(proxy: str, no_proxy: tuple[str, ...], environ: Mapping[str, str]) -> EgressProxy:
    """The EgressProxy of the settings, or of the environment when `proxy` is empty. ValueError names the culprit."""
    if proxy == NONE:
        return EgressProxy()
    if proxy:
        url = checked_proxy_url(proxy, "[upstream] proxy")
        return EgressProxy(http=url, https=url, bypass=_bypass_entries(no_proxy, "[upstream] no_proxy"))
    https = _variable(environ, "HTTPS_PROXY") or _variable(environ, "ALL_PROXY")
    http = _variable(environ, "HTTP_PROXY") or _variable(environ, "ALL_PROXY")
    bypass = no_proxy or tuple(part for part in _variable(environ, "NO_PROXY").split(",") if part.strip())
    return EgressProxy(http=checked_proxy_url(http, "HTTP_PROXY") if http else "",
                       https=checked_proxy_url(https, "HTTPS_PROXY") if https else "",
                       bypass=_bypass_entries(bypass, "[upstream] no_proxy" if no_proxy else "NO_PROXY"))


def checked_proxy_url(value: str, where: str) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as error:
        raise ValueError(f"{where}: not a URL ({error})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{where}: must be an http:// or https:// URL with a host, got {value!r}")
    return str(url)


def _variable(environ: Mapping[str, str], name: str) -> str:
    return (environ.get(name) or environ.get(name.lower()) or "").strip()


def _bypass_entries(entries: tuple[str, ...] | list[str], where: str) -> tuple[str, ...]:
    cleaned = []
    for entry in entries:
        entry = entry.strip().lower()
        if not entry:
            continue
        if "/" in entry and _network(entry) is None:
            raise ValueError(f"{where}: {entry!r} is neither a host, a domain nor a CIDR network")
        cleaned.append(entry.split(":")[0] if entry.count(":") == 1 else entry)   # "host:port" counts as the host
    return tuple(cleaned)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return None
