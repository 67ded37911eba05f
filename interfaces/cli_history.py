"""`entrepot history tag|digest` (a running server's history API) and `entrepot replay` (the views as of an instant)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from application.admin import InvalidRequest
from interfaces.admin_client import PAGE, AdminApiError
from interfaces.cli_admin import _client, _common, _reporting_api_errors
from interfaces.cli_output import AuditWriter

TIME_HELP = "ISO 8601 (UTC unless it says otherwise), epoch seconds, or a duration ago: 90s, 15m, 2h, 7d"


def _change(label: str, change: dict | None) -> str:
    if change is None:
        return f"{label:<9} none"
    label = f"{label:<9}"
    until = change["until"] or "now"
    ended = f", ended by {change['ended_by']}" if change.get("ended_by") else ""
    return f"{label} {change['digest']}  {change['since']} → {until}  ({change['opened_by']}{ended})"


def history_tag(args: argparse.Namespace) -> int:
    name = f"{args.org}/{args.repository}:{args.tag}"
    with _client(args) as client:
        try:
            found = client.history_tag(args.org, args.repository, args.tag, args.at)
        except AdminApiError as error:
            if error.status != 404 or "previous" not in error.error:
                raise
            if args.json:
                print(json.dumps({"error": error.error}, indent=2))
            else:
                print(f"{name} was not cached at {error.error.get('at')}")
                print(_change("before:", error.error["previous"]))
                print(_change("after:", error.error["next"]))
            return 3   # answered, but nothing was cached then: scripts can tell it from an error (1)
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print(f"{name} at {found['at']}: {found['digest']}")
        print(_change("interval:", found))
        print(_change("previous:", found["previous"]))
        print(_change("next:", found["next"]))
    return 0


def history_digest(args: argparse.Namespace) -> int:
    filters = {"digest": args.digest, "org": args.org, "since": args.since, "until": args.until}
    writer = AuditWriter("jsonl" if args.json else args.format, sys.stdout)
    with _client(args) as client:
        if writer.format == "table":   # JSON Lines and CSV stay one row per pull
            resolutions = client.digest_resolutions(args.digest, args.org)
            print(f"tags that resolved to {args.digest}:" if resolutions else f"no tag resolved to {args.digest}")
            for r in resolutions:
                print(_change(f"{r['org']}/{r['repository']}:{r['tag']}", r))
            print()
        for page in client.audit_pages(filters, args.limit, args.page_size, path="/history/digest"):
            writer.write(page)
    writer.close()
    if writer.count == 0 and writer.format == "table":
        print(f"no pulls of {args.digest} recorded", file=sys.stderr)
    return 0


def replay(args: argparse.Namespace) -> int:
    from interfaces.bootstrap import replay_to_file
    from interfaces.cli import _settings
    from interfaces.http.admin_audit import parse_time
    from infra.projection_runtime.point_in_time import ReplayTargetExists

    try:
        until = parse_time(args.until, "until", time.time())
    except InvalidRequest as error:
        print(f"entrepot: --until: {error.fields['until']}", file=sys.stderr)
        return 2
    if until is None:
        print("entrepot: --until is required", file=sys.stderr)
        return 2
    try:
        report = replay_to_file(_settings(args), until, Path(args.out), force=args.force)
    except ReplayTargetExists as error:
        print(f"entrepot: {error}", file=sys.stderr)
        return 1
    total = sum(n for apps in report.events.values() for n in apps.values())
    print(f"replayed the history up to {args.until} into {report.out} ({total} events used by the views; "
          "tables: replay_info says what it holds)")
    return 0


def add_history_commands(commands, with_config) -> None:
    history = commands.add_parser("history", help="point-in-time questions to a running server")
    sub = history.add_subparsers(dest="action", required=True)
    tag = _common(sub.add_parser("tag", help="what a tag resolved to at an instant, and the changes around it"))
    tag.add_argument("org")
    tag.add_argument("repository")
    tag.add_argument("tag")
    tag.add_argument("--at", help=f"the instant (default now): {TIME_HELP}")
    tag.set_defaults(func=_reporting_api_errors(history_tag))

    digest = _common(sub.add_parser("digest", help="every pull of a manifest digest, by tag or by digest"))
    digest.add_argument("digest", help="sha256:…")
    digest.add_argument("--org", help="only this organization's pulls")
    digest.add_argument("--since", help=f"inclusive: {TIME_HELP}")
    digest.add_argument("--until", help="exclusive; as --since")
    digest.add_argument("--limit", type=int, help="at most this many rows")
    digest.add_argument("--page-size", type=int, default=PAGE, metavar="N", help=f"rows per request (default {PAGE})")
    digest.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    digest.set_defaults(func=_reporting_api_errors(history_digest))

    again = with_config(commands.add_parser(
        "replay", help="the read model as it stood at an instant, into a new SQLite file (reads the event store)"))
    again.add_argument("--until", required=True, help=f"the instant: {TIME_HELP}")
    again.add_argument("--out", required=True, metavar="FILE", help="the SQLite file to write")
    again.add_argument("--force", action="store_true", help="replace FILE if it exists")
    again.set_defaults(func=replay)
