"""`entrepot flush|pin|unpin|images`: a running server's retention admin API, from the command line."""

from __future__ import annotations

import argparse
import json

from interfaces.admin_client import AdminApiError
from interfaces.cli_admin import _client, _common, _reporting_api_errors


def split_image(text: str) -> tuple[str, dict]:
    """REPOSITORY:TAG or REPOSITORY@DIGEST -> (repository, {"tag"} or {"digest"})."""
    if "@" in text:
        repository, digest = text.split("@", 1)
        return repository, {"digest": digest}
    repository, colon, tag = text.rpartition(":")
    if not colon or "/" in tag:
        raise AdminApiError(f"give REPOSITORY:TAG or REPOSITORY@DIGEST, got {text!r}")
    return repository, {"tag": tag}


def flush(args: argparse.Namespace) -> int:
    repository, tag = None, None
    if args.image:
        if "@" in args.image:
            raise AdminApiError("flush takes REPOSITORY or REPOSITORY:TAG")
        repository, colon, tag = args.image.rpartition(":")
        if not colon or "/" in tag:
            repository, tag = args.image, None
    with _client(args) as client:
        report = client.flush(args.org, repository, tag, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        verb = "would flush" if report["dry_run"] else "flushed"
        print(f"{verb} {report['images']} images ({report['tags']} tags); {report['blobs']} blobs, "
              f"{report['bytes']} bytes leave storage after the grace period"
              + (f"; {report['pinned_kept']} pinned images kept" if report["pinned_kept"] else ""))
    return 0


def pin(args: argparse.Namespace) -> int:
    repository, reference = split_image(args.image)
    with _client(args) as client:
        answer = client.pin(args.org, repository, reference, pinned=args.action == "pin")
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{'pinned' if args.action == 'pin' else 'unpinned'} {args.org}/{answer['repository']}@{answer['digest']}")
    return 0


def images(args: argparse.Namespace) -> int:
    with _client(args) as client:
        policy, items = client.images(args.org, args.limit)
    if args.json:
        print(json.dumps({"policy": policy, "items": items}, indent=2))
        return 0
    print(f"{args.org}: {len(items)} cached images, first evicted first ({policy})")
    print(f"{'REPOSITORY':30} {'TAGS':16} {'BYTES':>12} {'PULLS':>6} {'LAST PULL':20} PINNED  DIGEST")
    for item in items:
        print(f"{item['repository'][:30]:30} {','.join(item['tags'])[:16]:16} {item['bytes']:>12} "
              f"{item['pull_count']:>6} {(item['last_pull'] or '-')[:20]:20} {'yes' if item['pinned'] else '':7} "
              f"{item['digest'][:19]}")
    return 0


def add_retention_commands(commands) -> None:
    p = _common(commands.add_parser("flush", help="evict an org's cached images (all, a repository or a tag)"))
    p.add_argument("org")
    p.add_argument("image", nargs="?", metavar="REPOSITORY[:TAG]")
    p.add_argument("--dry-run", action="store_true", help="change nothing; report what would go")
    p.set_defaults(func=_reporting_api_errors(flush))
    for action, text in (("pin", "never evict this image"), ("unpin", "let this image be evicted again")):
        p = _common(commands.add_parser(action, help=text))
        p.add_argument("org")
        p.add_argument("image", metavar="REPOSITORY:TAG|REPOSITORY@DIGEST")
        p.set_defaults(func=_reporting_api_errors(pin), action=action)
    p = _common(commands.add_parser("images", help="an org's cached images in the order they would be evicted"))
    p.add_argument("org")
    p.add_argument("--limit", type=int, help="at most this many")
    p.set_defaults(func=_reporting_api_errors(images))
