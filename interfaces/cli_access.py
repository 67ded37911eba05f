"""`entrepot robot ...`, `entrepot org-admin create` and `entrepot admin-log`: access control through the admin API."""

from __future__ import annotations

import argparse
import json
import sys

from interfaces.cli_admin import _client, _common, _reporting_api_errors
from interfaces.cli_output import print_admin_log, print_robots


def _show(args: argparse.Namespace, answer, as_table) -> int:
    print(json.dumps(answer, indent=2)) if args.json else as_table()
    return 0


def _credentials(args: argparse.Namespace, created: dict, verb: str) -> int:
    """The token is shown once: on stdout alone (for scripts), the explanation on stderr."""
    if args.json:
        print(json.dumps(created, indent=2))
    else:
        print(f"{verb} {created['username']}; its token (shown once, store it now):", file=sys.stderr)
        print(created["token"])
    return 0


def robot_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        created = client.create_robot(args.org, args.name, args.repository or [], args.all_cached)
    return _credentials(args, created, "created robot")


def org_admin_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        created = client.create_org_admin(args.org, args.name)
    return _credentials(args, created, "created org admin")


def robot_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        robots = client.list_robots(args.org)
    return _show(args, robots, lambda: print_robots(robots))


def robot_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        robot = client.show_robot(args.org, args.name)
    return _show(args, robot, lambda: print_robots([robot]))


def robot_rotate(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rotated = client.robot_action(args.org, args.name, "rotate")
    return _credentials(args, rotated, "rotated the token of")


def robot_state(action: str):
    def run(args: argparse.Namespace) -> int:
        with _client(args) as client:
            robot = client.robot_action(args.org, args.name, action)
        return _show(args, robot, lambda: print_robots([robot], f"{action}d {robot['username']}"))
    return run


def robot_repositories(args: argparse.Namespace) -> int:
    with _client(args) as client:
        robot = client.set_robot_repositories(args.org, args.name, args.repository or [], args.all_cached)
    return _show(args, robot, lambda: print_robots([robot], f"changed the repositories of {robot['username']}"))


def robot_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_robot(args.org, args.name)
    if not args.json:
        print(f"deleted robot {args.org}+{args.name}")
    return 0


def admin_log(args: argparse.Namespace) -> int:
    with _client(args) as client:
        items = list(client.admin_log(args.org, args.actor, args.limit))
    if args.json:
        for item in items:
            print(json.dumps(item))
        return 0
    print_admin_log(items)
    return 0


def _patterns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", action="append", metavar="PATTERN",
                   help="a repository pattern it may pull (library/*, bitnami/redis, *); repeat for more")
    p.add_argument("--all-cached", action="store_true",
                   help="also every repository the org caches right now (expanded and recorded now)")


def add_access_commands(commands) -> None:
    robot = commands.add_parser("robot", help="robot accounts <org>+<name> of an organization")
    sub = robot.add_subparsers(dest="action", required=True)
    for action, func, text, named in (
            ("create", robot_create, "create a robot; prints its token once", True),
            ("list", robot_list, "the robots and org admins of an organization", False),
            ("show", robot_show, "one robot", True),
            ("rotate", robot_rotate, "a new token; the old one stops working", True),
            ("disable", robot_state("disable"), "refuse its credentials until enabled", True),
            ("enable", robot_state("enable"), "accept its credentials again", True),
            ("repositories", robot_repositories, "replace the repository patterns it may pull", True),
            ("delete", robot_delete, "delete a robot", True)):
        p = _common(sub.add_parser(action, help=text))
        p.add_argument("org")
        if named:
            p.add_argument("name")
        if action in ("create", "repositories"):
            _patterns(p)
        p.set_defaults(func=_reporting_api_errors(func))

    org_admin = commands.add_parser("org-admin", help="credentials that administer one organization")
    sub = org_admin.add_subparsers(dest="action", required=True)
    p = _common(sub.add_parser("create", help="create an org admin <org>+<name>; prints its token once "
                                              "(rotate, disable, delete it with `entrepot robot`)"))
    p.add_argument("org")
    p.add_argument("name")
    p.set_defaults(func=_reporting_api_errors(org_admin_create))

    log = _common(commands.add_parser("admin-log", help="every admin action with its actor, oldest first"))
    log.add_argument("--org")
    log.add_argument("--actor", help="admin, or an org admin's <org>+<name>")
    log.add_argument("--limit", type=int, help="at most this many actions")
    log.set_defaults(func=_reporting_api_errors(admin_log))
