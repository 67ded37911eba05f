"""The `entrepot` command: serve the cache, operate its projections, and administer a running server."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from importlib import metadata

from infra.data_dir import DataDirUnusable
from infra.persistence import DatabaseUnavailable
from infra.settings import SettingsError, load_settings
from interfaces.cli_access import add_access_commands
from interfaces.cli_admin import add_admin_commands
from interfaces.cli_history import add_history_commands
from interfaces.cli_retention import add_retention_commands
from interfaces.cli_what_if import add_what_if_command
from interfaces.cli_stats import add_stats_command
from interfaces.serving import CannotListen
from infra.projection_runtime import RebuildInProgress


def _settings(args: argparse.Namespace):
    return load_settings(args.config, host=getattr(args, "host", None), port=getattr(args, "port", None),
                         data_dir=args.data_dir)


def serve(args: argparse.Namespace) -> int:
    from infra.data_dir import hold_for_serving
    from infra.secrets import private_dir
    from interfaces.bootstrap import bootstrap
    from interfaces.http.access_log import with_access_log
    from interfaces.http.app import create_app
    from interfaces.http.forwarded import with_forwarded_client
    from interfaces.serving import (bind_listener, bound_port, freeze_startup_heap, keep_buffers_on_the_heap, run_granian,
                                    run_uvicorn, share_malloc_arenas)

    share_malloc_arenas()   # before any thread starts: each keeps the arena it first gets
    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per upstream request is noise
    # Bound first: a port in use fails the start before anything is opened or printed.
    listener = bind_listener(settings.host, settings.port)
    port = bound_port(listener)
    # Held until this process ends: `projections status` sees the server, an in-place rebuild is refused.
    data_dir_lock = hold_for_serving(private_dir(settings.data_dir))
    container = bootstrap(settings)
    container.serving_on(settings.host, port)

    def started() -> None:
        # Before the line that says we serve: the freeze's collection stalls the loop once, here.
        frozen = freeze_startup_heap()
        keep_buffers_on_the_heap()
        logging.getLogger(__name__).info("%d objects of start-up set aside from garbage collection", frozen)
        # Once serving: the line gives the real port (also when 0 was asked for); tests read it.
        print(f"Entrepôt serving on http://{display_host(settings.host)}:{port} (data in {container.data_dir}; "
              f"organizations: {', '.join(o.name for o in settings.organizations)})", flush=True)

    app = create_app(container, started=started)
    if container.admin_token_generated:
        # Printed this once only; it stays in data_dir/admin.token (mode 0600).
        print(f"Admin API token (generated, kept in {container.data_dir}/admin.token): {container.admin_token}",
              flush=True)
    if args.access_log:  # ours, not the server's: one format whichever engine serves
        app = with_access_log(app)
    # Outermost: the access log, the audit and the analytics all see the client nginx forwards for.
    app = with_forwarded_client(app, settings.trusted_proxies)
    run = run_granian if settings.engine == "granian" else run_uvicorn
    return run(app, settings, listener)


def display_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def projections_status(args: argparse.Namespace) -> int:
    from interfaces.bootstrap import projection_status

    rows = projection_status(_settings(args))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'PROJECTION':<12} {'APPLICATION':<12} {'POSITION':>10} {'HEAD':>10} {'LAG':>8}  STATE")
    for row in rows:
        print(f"{row['projection']:<12} {row['application']:<12} {row['position']:>10} {row['head']:>10} "
              f"{row['lag']:>8}  {row['state']}")
    return 0


def projections_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from interfaces.bootstrap import separate_runners

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with separate_runners(settings) as runners:
        print(f"running projections: {', '.join(runners.running) or 'none yet (run elsewhere)'}; "
              "the others are taken over when their process stops", flush=True)
        stopping.wait()
    return 0


def projections_rebuild(args: argparse.Namespace) -> int:
    from interfaces.bootstrap import rebuild_projections
    from projections.catalog import PROJECTION_NAMES

    names = PROJECTION_NAMES if "all" in args.name else tuple(dict.fromkeys(args.name))
    unknown = [name for name in names if name not in PROJECTION_NAMES]
    if unknown:
        print(f"entrepot: unknown projection {unknown[0]!r}; known: {', '.join(PROJECTION_NAMES)}, or all",
              file=sys.stderr)
        return 2
    replayed = rebuild_projections(_settings(args), names)
    for name in names:
        print(f"rebuilt {name}: {sum(replayed[name].values())} events replayed")
    return 0


def installed_version() -> str:
    try:
        return metadata.version("entrepot")
    except metadata.PackageNotFoundError:   # run from a checkout that was never installed
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="entrepot", description="A pull-through cache for OCI/Docker registries.")
    root.add_argument("--version", action="version", version=f"entrepot {installed_version()}")
    commands = root.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="TOML config file (default: $ENTREPOT_CONFIG, else built-in defaults)")
        p.add_argument("--data-dir", help="where events, views and blobs live (overrides [server] data_dir)")
        return p

    serve_p = with_config(commands.add_parser("serve", help="run the cache"))
    serve_p.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve_p.add_argument("--port", type=int, help="listen port (default 5000; 0: any free port, printed at start)")
    serve_p.add_argument("--access-log", action="store_true", help="log every request")
    serve_p.set_defaults(func=serve)

    projections = commands.add_parser("projections", help="inspect and rebuild the read model")
    sub = projections.add_subparsers(dest="action", required=True)
    status_p = with_config(sub.add_parser("status", help="each projection's position and lag"))
    status_p.add_argument("--json", action="store_true")
    status_p.set_defaults(func=projections_status)
    rebuild_p = with_config(sub.add_parser("rebuild", help="rebuild views from the event store (several in one "
                                                           "pass over each log)"))
    rebuild_p.add_argument("name", nargs="+", help="a projection's name, several, or all")
    rebuild_p.set_defaults(func=projections_rebuild)
    run_p = with_config(sub.add_parser("run", help="run the projections here until SIGTERM (PostgreSQL; "
                                                   "one runner per projection across processes)"))
    run_p.set_defaults(func=projections_run)
    add_admin_commands(commands)   # org ..., audit ...: a running server's admin API
    add_access_commands(commands)  # robot ..., org-admin create, admin-log
    add_stats_command(commands)    # stats [ORG]: its analytics
    add_retention_commands(commands)   # flush, pin, unpin, images
    add_history_commands(commands, with_config)   # history tag|digest (API), replay (the event store)
    add_what_if_command(commands)      # simulate
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except SettingsError as error:
        print(f"entrepot: {error}", file=sys.stderr)
        return 2
    except (DatabaseUnavailable, RebuildInProgress, CannotListen, DataDirUnusable) as error:
        print(f"entrepot: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
