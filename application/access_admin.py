"""Admin use cases of access control: robots and org admins of an org, and the admin actions log.

Each call that changes something records an AdminAction with its actor (besides the actor the
Robot events carry), so that the admin audit log lists every admin action in one place. Org changes
made through OrgAdmin are recorded here too (`record`), by the HTTP edge that knows the actor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from application.access import MAX_LOG_PAGE, Access, AdminLogRow, NewCredentials, RobotInfo
from application.admin import InvalidRequest
from application.errors import OrgUnknown
from application.ports import Clock
from domain.access import InvalidAccount, Role


class CachedRepositories(Protocol):
    """The tags view, as far as "every repository cached in this org right now" needs it."""

    def org_repositories(self, org: str) -> list[str]: ...


class AccessAdmin:
    def __init__(self, access: Access, org_exists: Callable[[str], bool], tags: CachedRepositories, clock: Clock,
                 on_change: Callable[[], None] = lambda: None, settled: Callable[[], None] = lambda: None) -> None:
        self._access = access
        # Waits (briefly) for the tags view to show what was just cached: "every repository cached now"
        # includes an image pulled a moment ago, not only what the view had read by then.
        self._settled = settled
        self._org_exists = org_exists
        self._tags = tags
        self._clock = clock
        self._on_change = on_change       # Authenticator.forget: a changed robot is verified again

    def create_robot(self, org: str, name: str, repositories: list[str], actor: str, all_cached: bool = False,
                     role: Role = Role.ROBOT) -> NewCredentials:
        self._known(org)
        patterns, note = self._patterns(org, repositories, all_cached)
        with invalid_fields():
            created = self._access.create_robot(org, name, patterns, actor, role=role, note=note)
        kind = "org admin" if role is Role.ORG_ADMIN else "robot"
        self.record(actor, f"{'admin' if role is Role.ORG_ADMIN else 'robot'}.create", org, created.username,
                    f"{kind}; repositories {', '.join(patterns) or '(none)'}" + (f"; {note}" if note else ""))
        return created

    def robots(self, org: str) -> list[RobotInfo]:
        self._known(org)
        return self._access.robots(org)

    def robot(self, org: str, name: str) -> RobotInfo:
        self._known(org)
        return self._access.robot(org, name)

    def rotate(self, org: str, name: str, actor: str) -> NewCredentials:
        self._known(org)
        rotated = self._access.rotate(org, name, actor)
        self._changed(actor, "robot.rotate", org, rotated.username, "token rotated")
        return rotated

    def set_repositories(self, org: str, name: str, repositories: list[str], actor: str,
                         all_cached: bool = False) -> RobotInfo:
        self._known(org)
        patterns, note = self._patterns(org, repositories, all_cached)
        with invalid_fields():
            robot = self._access.set_repositories(org, name, patterns, actor, note)
        self._changed(actor, "robot.repositories", org, robot.username,
                      f"repositories {', '.join(patterns) or '(none)'}" + (f"; {note}" if note else ""))
        return robot

    def disable(self, org: str, name: str, actor: str, disabled: bool = True) -> RobotInfo:
        self._known(org)
        robot = self._access.disable(org, name, actor, disabled)
        self._changed(actor, "robot.disable" if disabled else "robot.enable", org, robot.username, "")
        return robot

    def delete(self, org: str, name: str, actor: str) -> None:
        self._known(org)
        robot = self._access.robot(org, name)
        self._access.delete(org, name, actor)
        self._changed(actor, "robot.delete", org, robot.username, "")

    def org_deleted(self, org: str, actor: str, flushed: str | None = None) -> None:
        """An org was deleted: its robots and org admins go too, so a re-created org never inherits them.
        `flushed`: what its cache flush took with it, for the admin log."""
        robots = self._access.robots(org)
        for robot in robots:
            self._access.delete(org, robot.name, actor)
        if robots:
            self._on_change()
        details = [f"{len(robots)} robots deleted with it" if robots else "", flushed or ""]
        self.record(actor, "org.delete", org, org, "; ".join(detail for detail in details if detail))

    def record(self, actor: str, action: str, org: str, target: str, detail: str = "") -> None:
        self._access.record_action(actor, action, org, target, detail, self._clock.now())

    def log(self, org: str | None = None, actor: str | None = None, cursor: str | None = None,
            limit: int = 100) -> tuple[list[AdminLogRow], str | None]:
        """A page of admin actions (oldest first) and the cursor of the next page (None: the last page)."""
        if not 1 <= limit <= MAX_LOG_PAGE:
            raise InvalidRequest(f"limit must be between 1 and {MAX_LOG_PAGE}",
                                 {"limit": f"must be between 1 and {MAX_LOG_PAGE}, got {limit}"})
        if cursor and (not cursor.isascii() or not cursor.isdigit() or len(cursor) > 19):
            raise InvalidRequest("invalid cursor", {"cursor": "not a cursor this server handed out"})
        rows = self._access.actions(org, actor, int(cursor or 0), limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (str(rows[-1].id) if more else None)

    def _changed(self, actor: str, action: str, org: str, target: str, detail: str) -> None:
        self._on_change()
        self.record(actor, action, org, target, detail)

    def _known(self, org: str) -> None:
        if not self._org_exists(org):
            raise OrgUnknown(f"no cache organization named {org!r}", org=org)

    def _patterns(self, org: str, repositories: list[str], all_cached: bool) -> tuple[list[str], str]:
        """The patterns given, plus with `all_cached` every repository the org holds now, expanded here."""
        patterns = list(repositories)
        if not all_cached:
            return patterns, ""
        self._settled()
        cached = self._tags.org_repositories(org)
        return list(dict.fromkeys(patterns + cached)), f"expanded from the {len(cached)} repositories cached now"


class invalid_fields:
    """InvalidAccount (domain) as the admin API's InvalidRequest naming the field."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if isinstance(error, InvalidAccount):
            raise InvalidRequest(str(error), {error.field or "body": str(error)}) from None
        return False
