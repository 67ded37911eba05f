"""`entrepot audit seal | seals | verify | archive | evictions`: seal the audit chain through a running server, verify
it offline, archive old pulls, and read what left the cache (the eviction log)."""

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


def evictions(args: argparse.Namespace) -> int:
    """GET /api/v1/audit/evictions: evictions, flushes (dry runs too), pins and unpins, newest first."""
    from interfaces.cli_admin import _client

    filters = {"org": args.org, "kind": args.kind, "generation": args.generation}
    with _client(args) as client:
        pages = client.audit_pages(filters, args.limit, path="/audit/evictions")
        if not args.json:
            print(f"{'AT':20} {'KIND':8} {'ORG':12} {'GEN':>3} {'REPOSITORY':28} {'BYTES':>12} {'REASON':9} "
                  f"{'ACTOR':16} DIGEST")
        for page in pages:
            for entry in page:
                if args.json:
                    print(json.dumps(entry, sort_keys=True))
                    continue
                kind = entry["kind"] + (" (dry)" if entry["dry_run"] else "")
                print(f"{entry['at'][:20]:20} {kind:8} {entry['org'][:12]:12} {entry['generation']:>3} "
                      f"{entry['repository'][:28]:28} {entry['bytes']:>12} {(entry['reason'] or '-')[:9]:9} "
                      f"{(entry['actor'] or '-')[:16]:16} {entry['digest'][:19]}")
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


FAULT_ENV = "ENTREPOT_ARCHIVE_FAULT"   # tests: the archiver SIGKILLs its own process at this step


def _fault_step():
    import os
    import signal

    fault = os.environ.get(FAULT_ENV)

    def step(name: str) -> None:
        if name == fault:
            os.kill(os.getpid(), signal.SIGKILL)
    return step if fault else None


def archive_run(args: argparse.Namespace) -> int:
    from infra.settings import load_settings
    from interfaces.bootstrap import OfflineAudit

    settings = load_settings(args.config, data_dir=args.data_dir)
    if settings.audit.retain_days <= 0:
        print("entrepot: [audit] retain_days is 0: pull events are kept forever, nothing to archive", file=sys.stderr)
        return 2
    with OfflineAudit(settings) as audit:
        report = audit.archiver(step=_fault_step(), batch=args.batch).run()
    print(f"archived {report.events} pull events in {report.segments} segments ({report.bytes} bytes)"
          + (f"; finished {report.resumed} segments an earlier run left" if report.resumed else ""))
    return 0


def archive_list(args: argparse.Namespace) -> int:
    from infra.settings import load_settings
    from interfaces.bootstrap import OfflineAudit

    with OfflineAudit(load_settings(args.config, data_dir=args.data_dir)) as audit:
        segments = audit.archive.segments()
    if args.json:
        print(json.dumps([s.as_dict() for s in segments], indent=2))
        return 0
    for s in segments:
        print(f"{s.name}  positions {s.first}-{s.last}  {s.count} events  {s.size} bytes  written {_when(s.at)}"
              f"{'' if s.removed else '  (events still in the store: removal pending)'}")
    if not segments:
        print("no archive segments: every pull event is in the event store", file=sys.stderr)
    return 0


def archive_show(args: argparse.Namespace) -> int:
    """The archived pulls of one segment as audit rows (JSON Lines), verified against the recorded hash."""
    from dataclasses import asdict

    from eventsourcing.persistence import StoredEvent

    from infra.settings import load_settings
    from interfaces.bootstrap import OfflineAudit
    from projections.audit import audit_row

    with OfflineAudit(load_settings(args.config, data_dir=args.data_dir)) as audit:
        segment = next((s for s in audit.archive.segments() if s.name == args.segment), None)
        if segment is None:
            print(f"entrepot: no archive segment {args.segment!r} (entrepot audit archive list)", file=sys.stderr)
            return 2
        for record in audit.archive.read(segment):
            event = audit.pulls.mapper.to_domain_event(StoredEvent(record.originator_id, record.originator_version,
                                                                   record.topic, record.state))
            print(json.dumps(asdict(audit_row(event, record.id))))
    return 0


def _offline(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--config", help="TOML config file (default: $ENTREPOT_CONFIG, else built-in defaults)")
    p.add_argument("--data-dir", help="where events, views and blobs live (overrides [server] data_dir)")
    return p


def add_audit_chain_commands(audit: argparse.ArgumentParser, common, reporting) -> None:
    sub = audit.add_subparsers(dest="audit_action", metavar="{seal,seals,verify,archive,evictions}")
    p = common(sub.add_parser("seal", help="record a seal of the audit chain now (the server's admin API); "
                                           "prints it for shipping elsewhere"))
    p.set_defaults(func=reporting(seal))
    p = common(sub.add_parser("seals", help="every seal recorded (the server's admin API)"))
    p.set_defaults(func=reporting(seals))
    p = _offline(sub.add_parser("verify", help="recompute the audit chain from the archive and the stored events "
                                               "and check it against the chain view and the seals (reads the "
                                               "event store: run it where the config is); exits 1 at the first "
                                               "mismatch"))
    p.add_argument("--since", metavar="SEAL", help="trust this seal (its id) and verify only what follows it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=verify)
    p = common(sub.add_parser("evictions", help="what left the cache: evictions, flushes, pins and unpins, newest "
                                                "first (the server's admin API)"))
    p.add_argument("--org")
    p.add_argument("--kind", choices=["eviction", "flush", "pin", "unpin"])
    p.add_argument("--generation", help="which org of the name (1, 2, ...); every generation when absent")
    p.add_argument("--limit", type=int, help="at most this many entries")
    p.set_defaults(func=reporting(evictions))
    archive = sub.add_parser("archive", help="pull events older than [audit] retain_days, in blob storage")
    archive_sub = archive.add_subparsers(dest="archive_action", required=True)
    p = _offline(archive_sub.add_parser("run", help="archive what is due now (entrepot serve does it hourly)"))
    p.add_argument("--batch", type=int, default=5000, help="events per segment (default 5000)")
    p.set_defaults(func=archive_run)
    p = _offline(archive_sub.add_parser("list", help="the segments: which positions live in the archive"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=archive_list)
    p = _offline(archive_sub.add_parser("show", help="one segment's pulls as audit rows (JSON Lines), verified"))
    p.add_argument("segment", metavar="NAME", help="as `archive list` prints it")
    p.set_defaults(func=archive_show)
