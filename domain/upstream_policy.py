"""Where an org's upstream may point (the SSRF guard's policy): pure checks of a URL and of resolved addresses.

The adapter (infra/upstream/guard.py) resolves every host at every connection and asks this
policy about each address; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never an upstream, whatever the operator allows: link-local (cloud metadata lives there), "this
# network", multicast, reserved and broadcast ranges, and the metadata addresses outside them.
ALWAYS_REFUSED: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32",  # AWS IPv6, Alibaba metadata
    "0.0.0.0/8", "224.0.0.0/4", "240.0.0.0/4", "ff00::/8", "::/128",
))
# Internal, but an operator may name them (the config file's orgs, `[security] allowed_upstream_networks`).
INTERNAL: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
    "198.18.0.0/15", "fc00::/7", "fec0::/10", "192.0.0.0/24",
))
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                            "instance-data.ec2.internal", "metadata.azure.internal", "metadata.tencentyun.com"})
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_networks(values: list[str] | tuple[str, ...]) -> tuple[Network, ...]:
    """`["10.1.0.0/16", "127.0.0.1"]` -> networks; ValueError naming the bad entry."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not a network (CIDR such as 10.1.0.0/16): {value!r}") from None
    return tuple(networks)


def host_literal(host: str) -> Address | None:
    """The address a host names literally, in any spelling a resolver accepts, else None.

    `127.1`, `2130706433`, `0x7f000001`, `0177.0.0.1` and `[::ffff:127.0.0.1]` are all 127.0.0.1
    to inet_aton/getaddrinfo, so they are to us.
    """
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        pass
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    numbers = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                numbers.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                numbers.append(int(part, 8))
            else:
                numbers.append(int(part, 10) if part.isdigit() else -1)
        except ValueError:
            return None
    if any(n < 0 for n in numbers):
        return None
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for n in leading:
        value = value * 256 + n
    return ipaddress.IPv4Address(value * 256 ** (5 - len(numbers)) + last)


def embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64, compatible), which is where it leads."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address.sixtofour:
            return address.sixtofour
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if int(address) >> 32 == 0 and int(address) > 1:   # deprecated IPv4-compatible ::a.b.c.d
            return ipaddress.IPv4Address(int(address))
    return address


@dataclass(frozen=True)
class UpstreamPolicy:
    """What one org's upstream connections may reach.

    `internal_allowed`: loopback and private ranges too (the operator's own, config-file orgs).
    `allowed_networks`: internal networks the operator opened to every org.
    """

    allowed_networks: tuple[Network, ...] = ()
    internal_allowed: bool = False

    def address_refusal(self, address: Address) -> str | None:
        """None if `address` may be connected to, else why not."""
        address = embedded_ipv4(address)
        if any(address in network for network in ALWAYS_REFUSED):
            return f"{address} is a link-local, metadata or reserved address"
        if address.is_global and not any(address in network for network in INTERNAL):
            return None
        if self.internal_allowed or any(address in network for network in self.allowed_networks):
            return None
        return (f"{address} is a loopback or private address; list its network in "
                f"[security] allowed_upstream_networks to allow it")

    def host_refusal(self, scheme: str, host: str) -> str | None:
        """What can be said before resolving: the scheme, metadata names, literal addresses."""
        if scheme not in ("http", "https"):
            return f"scheme {scheme!r} is not http or https"
        name = host.strip("[]").rstrip(".").lower()
        if not name:
            return "no host"
        if name in METADATA_NAMES or name.endswith(".metadata.google.internal"):
            return f"{name} is a cloud metadata service"
        literal = host_literal(name)
        return self.address_refusal(literal) if literal is not None else None


OPERATOR = UpstreamPolicy(internal_allowed=True)   # the config file's orgs, and library users of HttpUpstream
STRICT = UpstreamPolicy()                          # a request that says nothing about its org
