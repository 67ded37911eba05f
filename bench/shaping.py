"""A remote upstream on one machine: the bytes registries send over loopback held to a bandwidth (Linux `tc`).

On the bench machine an upstream registry answers over loopback at whatever the two cores can push, so a
cold pull measures CPU alone, and any cache that receives each byte, then sends it again, does that work
twice. A real upstream (Docker Hub, ghcr.io) is a network away: `shaped_ports` gives each listed port its
own HTB class at `mbit` megabits per second for what it sends (matched on the source port), so that the
direct pull and the cache's fill each get the same bandwidth from their registry. Other loopback traffic
(the client's, the cache's answers) stays unshaped: HTB passes unclassified packets straight through.

Needs root (CAP_NET_ADMIN) and the kernel's htb qdisc and u32 filter; the qdisc is removed on exit. The
kernel here has no netem, so round-trip latency is not modelled: bandwidth only.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

DEVICE = "lo"


class ShapingUnavailable(RuntimeError):
    """tc is missing, the process may not change qdiscs, or the kernel lacks htb or u32."""


def _tc(*args: str) -> None:
    try:
        subprocess.run(["tc", *args], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        raise ShapingUnavailable("tc (iproute2) is not installed") from None
    except subprocess.CalledProcessError as error:
        raise ShapingUnavailable(f"tc {' '.join(args)}: {error.stderr.strip()}") from None


@contextmanager
def shaped_ports(ports: Sequence[int], mbit: float) -> Iterator[None]:
    """While inside, what each of `ports` sends on loopback goes at most `mbit` Mbit/s (each its own)."""
    _tc("qdisc", "add", "dev", DEVICE, "root", "handle", "1:", "htb")   # no default: the rest passes unshaped
    try:
        for number, port in enumerate(ports, start=10):
            rate = f"{mbit:g}mbit"
            _tc("class", "add", "dev", DEVICE, "parent", "1:", "classid", f"1:{number}", "htb", "rate", rate,
                "ceil", rate)
            _tc("filter", "add", "dev", DEVICE, "protocol", "ip", "parent", "1:", "prio", "1", "u32",
                "match", "ip", "sport", str(port), "0xffff", "flowid", f"1:{number}")
        yield
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", DEVICE, "root"], capture_output=True)
