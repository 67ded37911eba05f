"""`entrepot org ...` and `entrepot audit ...`: the admin API of a running server, from the command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Annotated, Literal, get_args, get_origin

import msgspec

from domain.org_settings import OrgSettings

from interfaces.admin_client import PAGE, AdminApiError, AdminClient
from interfaces.cli_audit_chain import add_audit_chain_commands
from interfaces.cli_output import AuditWriter, print_cached_blobs, print_cached_tags, print_org, print_orgs

DEFAULT_URL = "http://127.0.0.1:5000"
PREWARM_TIMEOUT = 3600.0


def org_flags() -> list[tuple[str, str, dict]]:
    """(flag, field, argparse options) for every org setting, generated from the domain's OrgSettings.

    No default is set, so an update sends only the settings given; the server fills in the rest.
    """
    flags = []
    for f in msgspec.structs.fields(OrgSettings):
        kind, meta = f.type, None
        if get_origin(kind) is Annotated:
            kind, *extras = get_args(kind)
            meta = next((m for m in reversed(extras) if isinstance(m, msgspec.Meta) and m.description), None)
            while get_origin(kind) is Annotated:   # Seconds = Annotated[int, ...] nested in another Annotated
                kind = get_args(kind)[0]
        options: dict = {"dest": f.name, "default": None, "help": meta.description if meta else None}
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif get_origin(kind) is tuple:   # a list setting: the flag repeated; one empty value clears it
            options.update(action="append", type=str, metavar="PATTERN")
        elif get_origin(kind) is Literal:
            options.update(choices=get_args(kind), metavar="|".join(get_args(kind)))
        else:
            options.update(type=kind, metavar="N" if kind is int else f.name.upper())
        flags.append(("--" + f.name.replace("_", "-"), f.name, options))
    return flags


def _client(args: argparse.Namespace, timeout: float = 30.0) -> AdminClient:
    if not args.token:
        raise AdminApiError("no admin token: pass --token or set ENTREPOT_ADMIN_TOKEN (the server printed it at "
                            "first start and keeps it in <data_dir>/admin.token)")
    return AdminClient(args.url, args.token, timeout=timeout, user=getattr(args, "user", None))


def _settings(args: argparse.Namespace) -> dict:
    settings = {field: value for _, field, _ in org_flags() if (value := getattr(args, field)) is not None}
    for field, value in settings.items():
        if isinstance(value, list):
            settings[field] = [item for item in value if item]
    if args.password_stdin:
        settings["password"] = sys.stdin.readline().rstrip("\r\n")
    return settings


def _print(args: argparse.Namespace, answer, as_table: Callable[[], None]) -> None:
    """The API's answer as JSON with --json, else as the readable table."""
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        as_table()


def _print_org_change(args: argparse.Namespace, org: dict, verb: str) -> None:
    _print(args, org, lambda: print_orgs([org], f"{verb} organization {args.name}"))


def org_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        orgs = client.list_orgs()
    _print(args, orgs, lambda: print_orgs(orgs))
    return 0


def org_show(args: argparse.Namespace) -> int:
    """The summary; with --tags or --blobs, those too, following the API's pages up to --limit."""
    limit = args.limit or None   # 0: no limit
    with _client(args) as client:
        details = client.show_org(args.name)
        if args.tags or args.repository:
            details["tags"] = list(client.cached(args.name, "tags", limit, repository=args.repository))
        if args.blobs:
            details["blobs"] = list(client.cached(args.name, "blobs", limit))

    def show() -> None:
        print_org(details)
        for kind, printer in (("tags", print_cached_tags), ("blobs", print_cached_blobs)):
            if kind in details:
                print()
                printer(details[kind])
    _print(args, details, show)
    return 0


def org_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        org = client.create_org(args.name, _settings(args))
    _print_org_change(args, org, "created")
    return 0


def org_update(args: argparse.Namespace) -> int:
    with _client(args) as client:
        org = client.update_org(args.name, _settings(args), replace=args.replace)
    _print_org_change(args, org, "updated")
    return 0


def org_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_org(args.name, flush=args.flush)
    if not args.json:
        print(f"deleted organization {args.name}" + (" and flushed its cache" if args.flush else ""))
    return 0


def prewarm(args: argparse.Namespace) -> int:
    with _client(args, timeout=PREWARM_TIMEOUT) as client:   # the answer comes once every blob is in
        results = client.prewarm(args.org, args.references)
    failed = [result for result in results if result.get("error")]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            if result.get("error"):
                print(f"{result['reference']}: failed: {result['error']}", file=sys.stderr)
            else:
                print(f"{result['reference']}: {result['digest']} ({result['manifests']} manifests, "
                      f"{result['blobs']} blobs, {result['bytes']} bytes)")
    return 1 if failed else 0


def audit(args: argparse.Namespace) -> int:
    filters = {"org": args.org, "repository": args.repository, "result": args.result, "client": args.client,
               "user_agent": args.user_agent, "since": args.since, "until": args.until, "actor": args.actor,
               "digest": args.digest}
    writer = AuditWriter("jsonl" if args.json else args.format, sys.stdout)
    with _client(args) as client:
        for page in client.audit_pages(filters, args.limit, args.page_size):
            writer.write(page)
            if writer.count > len(page) or len(page) == args.page_size:   # a long export: report progress
                print(f"entrepot audit: {writer.count} rows so far", file=sys.stderr, flush=True)
    writer.close()
    if writer.count == 0 and writer.format == "table":
        print("no pulls match", file=sys.stderr)
    return 0


def _reporting_api_errors(command):
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except AdminApiError as error:
            print(f"entrepot: {error.message}", file=sys.stderr)
            for field, problem in error.fields.items():
                print(f"  {field}: {problem}", file=sys.stderr)
            return 1
    return run


def _common(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--url", default=os.environ.get("ENTREPOT_URL") or DEFAULT_URL,
                   help=f"the server (default: $ENTREPOT_URL, else {DEFAULT_URL})")
    p.add_argument("--token", default=os.environ.get("ENTREPOT_ADMIN_TOKEN"),
                   help="admin API token, or an org admin's token with --user (default: $ENTREPOT_ADMIN_TOKEN)")
    p.add_argument("--user", default=os.environ.get("ENTREPOT_ADMIN_USER") or None,
                   help="an org admin's <org>+<name> (default: $ENTREPOT_ADMIN_USER); without it the token is "
                        "the global admin token")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _org_settings(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for flag, _, options in org_flags():
        p.add_argument(flag, **options)
    p.add_argument("--password-stdin", action="store_true", help="read the upstream password from stdin")
    return p


def add_admin_commands(commands) -> None:
    org = commands.add_parser("org", help="manage the cache organizations of a running server")
    sub = org.add_subparsers(dest="action", required=True)
    _common(sub.add_parser("list", help="every organization")).set_defaults(func=_reporting_api_errors(org_list))
    show = _common(sub.add_parser("show", help="settings and what the org caches: tags, blobs, bytes stored"))
    show.add_argument("name")
    show.add_argument("--tags", action="store_true", help="list the cached tags too (by repository and tag)")
    show.add_argument("--repository", help="list the cached tags of this repository (implies --tags)")
    show.add_argument("--blobs", action="store_true", help="list the cached blobs too (by digest)")
    show.add_argument("--limit", type=int, default=1000, metavar="N",
                      help="at most N tags and N blobs (default 1000); 0: all of them")
    show.set_defaults(func=_reporting_api_errors(org_show))
    delete = _common(sub.add_parser("delete", help="delete an organization"))
    delete.add_argument("name")
    delete.add_argument("--flush", action="store_true",
                        help="flush everything it caches (pinned images too) with it; without it an org that "
                             "still caches images is not deleted")
    delete.set_defaults(func=_reporting_api_errors(org_delete))
    create = _org_settings(_common(sub.add_parser("create", help="register a new organization")))
    create.add_argument("name")
    create.set_defaults(func=_reporting_api_errors(org_create))
    update = _org_settings(_common(sub.add_parser("update", help="change the given settings of an organization")))
    update.add_argument("name")
    update.add_argument("--replace", action="store_true", help="unset settings go back to their defaults")
    update.set_defaults(func=_reporting_api_errors(org_update))

    warm = _common(commands.add_parser(
        "prewarm", help="bring images into an org's cache now, whatever [server] pull_through says"))
    warm.add_argument("org")
    warm.add_argument("references", nargs="+", metavar="REPOSITORY:TAG", help="or REPOSITORY@DIGEST")
    warm.set_defaults(func=_reporting_api_errors(prewarm))

    log = _common(commands.add_parser("audit", help="who pulled what: the audit log of a running server"))
    for flag, text in (("--org", None), ("--repository", None), ("--client", "the client's address"),
                       ("--actor", "who pulled: anonymous, <org>+<robot>, admin"),
                       ("--user-agent", "a substring of the User-Agent"),
                       ("--digest", "the manifest digest served (see also `history digest`)"),
                       ("--result", "hit, miss, stale, revalidated, error, denied"),
                       ("--since", "ISO 8601, epoch seconds, or a duration ago: 90s, 15m, 2h, 7d"),
                       ("--until", "exclusive; as --since")):
        log.add_argument(flag, help=text)
    log.add_argument("--limit", type=int, help="at most this many rows")
    log.add_argument("--page-size", type=int, default=PAGE, metavar="N", help=f"rows per request (default {PAGE})")
    log.add_argument("--format", choices=("table", "jsonl", "csv"), default="table")
    log.set_defaults(func=_reporting_api_errors(audit))
    add_audit_chain_commands(log, _common, _reporting_api_errors)   # audit seal | seals | verify
