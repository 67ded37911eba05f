"""`entrepot stats [ORG]`: a running server's cache-efficiency figures (/api/v1/analytics) as a table or JSON."""

from __future__ import annotations

import argparse
import json

from interfaces.cli_admin import _client, _common, _reporting_api_errors
from interfaces.cli_output import human_bytes, table


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"≤{value:g}s"


def summary_rows(orgs: list[dict]) -> list[list[str]]:
    return [[o["org"], str(o["pulls_total"]), str(o["pulls"]["hit"]), str(o["pulls"]["miss"]), str(o["stale"]),
             str(o["pulls"]["error"]), str(o["denied"]), _ratio(o["hit_ratio"]), human_bytes(o["bytes_served"]),
             human_bytes(o["bytes_from_upstream"]), human_bytes(o["bytes_saved"]), str(o["clients"]),
             _seconds(o["fill_seconds_p95"])] for o in orgs]


HEADERS = ["ORG", "PULLS", "HIT", "MISS", "STALE", "ERROR", "DENIED", "HIT RATIO", "SERVED", "FROM UPSTREAM", "SAVED",
           "CLIENTS", "FILL P95"]


def stats(args: argparse.Namespace) -> int:
    with _client(args) as client:
        answer = client.analytics("summary", org=args.org, since=args.since, until=args.until,
                                  generation=args.generation)
        top = client.analytics("top", org=args.org, since=args.since, until=args.until, limit=args.top,
                               generation=args.generation) \
            if args.org and args.top else None
    if args.json:
        print(json.dumps(answer if top is None else {**answer, "top": top}, indent=2))
        return 0
    orgs = answer["orgs"] if args.org is None else [answer]
    print(f"{answer['since']} to {answer['until']}")
    print(table(summary_rows(orgs), HEADERS) if orgs else "no organizations")
    if top and top["repositories"]:
        print("\ntop repositories")
        print(table([[r["repository"], str(r["pulls"]), human_bytes(r["bytes_served"])] for r in top["repositories"]],
                    ["REPOSITORY", "PULLS", "SERVED"]))
    return 0


def add_stats_command(commands) -> None:
    p = _common(commands.add_parser("stats", help="hit ratio, bytes saved and pulls per org (a running server)"))
    p.add_argument("org", nargs="?", help="one org (with its top repositories); every org when absent")
    p.add_argument("--since", help="ISO 8601, epoch seconds, or a duration ago: 90s, 15m, 2h, 7d (default 24h)")
    p.add_argument("--until", help="exclusive; as --since (default now)")
    p.add_argument("--top", type=int, default=5, metavar="N", help="with ORG: the N top repositories (0: none)")
    p.add_argument("--generation", metavar="N|all", help="which org of the name (see Deleting an org): "
                                                         "a number from 1, or all; default the latest")
    p.set_defaults(func=_reporting_api_errors(stats))
