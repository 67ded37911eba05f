"""`entrepot simulate`: a running server's what-if API — the org's recorded pulls under another quota and policy."""

from __future__ import annotations

import argparse
import json
import re

from interfaces.admin_client import AdminApiError
from interfaces.cli_admin import _client, _common, _reporting_api_errors

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?)b?$", re.IGNORECASE)
_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def parse_size(text: str) -> int:
    """Bytes: 1048576, 500MB (10^6), 10GiB or 10G (2^30: what a quota is usually thought in)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise AdminApiError(f"--quota: not a size: {text!r} (examples: 10GiB, 500MB, 1048576)")
    number, unit, binary = match.groups()
    base = 1000 if unit and not binary and text.strip()[-1:].lower() == "b" else 1024
    return int(float(number) * base ** _POWER[unit.lower()])


def simulate(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    with _client(args, timeout=600.0) as client:
        report = client.simulate(args.org, parse_size(args.quota), policies, args.since)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = [report["recorded"], *report["simulated"]]
    print(f"{args.org}: {rows[0]['pulls']} pulls replayed with a quota of {report['quota_bytes']} bytes"
          + (f" ({report['unknown_pulls']} pulls of images no event describes left out)"
             if report["unknown_pulls"] else ""))
    print(f"{'':12}" + "".join(f"{row['policy']:>16}" for row in rows))
    for label, key in (("hit ratio", "hit_ratio"), ("hits", "hits"), ("upstream B", "upstream_bytes"),
                       ("evictions", "evictions")):
        print(f"{label:12}" + "".join(f"{'-' if row[key] is None else row[key]:>16}" for row in rows))
    return 0


def add_what_if_command(commands) -> None:
    p = _common(commands.add_parser("simulate", help="replay an org's recorded pulls under a quota and eviction "
                                                     "policies, beside what really happened"))
    p.add_argument("--org", required=True)
    p.add_argument("--quota", required=True, metavar="SIZE", help="e.g. 10GiB, 500MB, or bytes")
    p.add_argument("--policy", default="lru,lfu", help="comma-separated: lru, lfu, gdsf (default lru,lfu)")
    p.add_argument("--since", help="ISO 8601, epoch seconds, or a duration ago: 30d (default: every recorded pull)")
    p.set_defaults(func=_reporting_api_errors(simulate))
