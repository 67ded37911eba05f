"""`entrepot audit seal | seals | verify`: seal the audit chain through a running server, and verify it offline."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime


def _when(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def print_seal(seal: dict) -> None:
    print(f"seal {seal['seal']} at {seal['at'] if isinstance(seal['at'], str) else _when(seal['at'])} "
          f"by {seal['actor']} (Access log position {seal['position']})")
    for head in seal["heads"]:
        print(f"  {head['application']:<8} {head['count']:>10} events to position {head['position']:<10} "
              f"head {head['link']}")


def seal(args: argparse.Namespace) -> int:
    from interfaces.cli_admin import _client

    with _client(args) as client:
        record = client.seal()
    if args.json:   # the JSON line is what an operator ships elsewhere (as [audit] seal_file appends it)
        print(json.dumps(record, sort_keys=True, separators=(",", ":")))
    else:
        print_seal(record)
    return 0


def seals(args: argparse.Namespace) -> int:
    from interfaces.cli_admin import _client

    with _client(args) as client:
        records = client.seals()
    for record in records:
        if args.json:
            print(json.dumps(record, sort_keys=True, separators=(",", ":")))
        else:
            print_seal(record)
    return 0


def verify(args: argparse.Namespace) -> int:
    from application.audit_verify import UnknownSeal
    from infra.settings import load_settings
    from interfaces.bootstrap import verify_audit

    settings = load_settings(args.config, data_dir=args.data_dir)
    try:
        report = verify_audit(settings, since=args.since)
    except UnknownSeal as error:
        print(f"entrepot: {error.args[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        counts = ", ".join(f"{name} {n} events" for name, n in report.checked.items()) or "no events"
        print(f"checked {counts}; {report.seals_checked} seal checkpoints"
              + (f" (since seal {report.since})" if report.since else ""))
        if report.mismatch is None:
            print("audit chain verified: every stored event matches its link and every seal")
        else:
            m = report.mismatch
            print(f"MISMATCH in {m.application} at position {m.position}: event {m.event_id or '-'} "
                  f"({m.topic or '-'}): {m.reason}")
    return 0 if report.ok else 1


def add_audit_chain_commands(audit: argparse.ArgumentParser, common, reporting) -> None:
    sub = audit.add_subparsers(dest="audit_action", metavar="{seal,seals,verify}")
    p = common(sub.add_parser("seal", help="record a seal of the audit chain now (the server's admin API); "
                                           "prints it for shipping elsewhere"))
    p.set_defaults(func=reporting(seal))
    p = common(sub.add_parser("seals", help="every seal recorded (the server's admin API)"))
    p.set_defaults(func=reporting(seals))
    p = sub.add_parser("verify", help="recompute the audit chain from the stored events and check it against "
                                      "the chain view and the seals (reads the event store: run it where "
                                      "the config is); exits 1 at the first mismatch")
    p.add_argument("--config", help="TOML config file (default: $ENTREPOT_CONFIG, else built-in defaults)")
    p.add_argument("--data-dir", help="where events, views and blobs live (overrides [server] data_dir)")
    p.add_argument("--since", metavar="SEAL", help="trust this seal (its id) and verify only what follows it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=verify)
