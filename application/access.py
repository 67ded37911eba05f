"""The Access application: robot accounts and org admins (Robot aggregates) and the admin actions log.

Its own event store (`access.db`, or `access_events` on PostgreSQL), like Credentials: it holds only
slow hashes of tokens, never a token. Robots are few and read rarely (a verified credential is
cached by `Authenticator`), so listings read the application's notification log, with no view.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.utils import get_topic

from domain.access import (InvalidAccount, Principal, Role, check_patterns, check_robot_name, robot_username,
                           split_username)
from domain.robot import AdminAction, Robot, hash_token, new_token, token_matches

MAX_LOG_PAGE = 1000
_SCAN = 1000   # notifications read per query while listing


class RobotUnknown(LookupError):
    """No such robot (or it was deleted)."""


class RobotExists(Exception):
    """A live robot of that name already exists in the org."""


@dataclass(frozen=True)
class RobotInfo:
    username: str
    name: str
    org: str
    role: str
    repositories: list[str]
    disabled: bool


@dataclass(frozen=True)
class AdminLogRow:
    id: int          # the notification id: the paging key
    actor: str
    action: str
    org: str
    target: str
    detail: str
    at: float


@dataclass(frozen=True)
class NewCredentials:
    username: str
    token: str      # shown once, never stored


class Access(Application[UUID]):
    name = "Access"

    # -- robots --------------------------------------------------------------------------------------
    def create_robot(self, org: str, name: str, repositories: list[str], actor: str, role: Role = Role.ROBOT,
                     note: str = "") -> NewCredentials:
        check_robot_name(name)
        patterns = list(check_patterns(repositories)) if role is Role.ROBOT else ["*"]
        token = new_token()
        robot = self._robot(org, name)
        if robot is None:
            robot = Robot(org=org, name=name, role=role.value, repositories=patterns, token_hash=hash_token(token),
                          actor=actor, note=note)
        elif robot.deleted:
            robot.reinstate(role.value, patterns, hash_token(token), actor, note)
        else:
            raise RobotExists(f"robot {robot.username} exists; rotate its token or delete it first")
        self.save(robot)
        return NewCredentials(robot.username, token)

    def rotate(self, org: str, name: str, actor: str) -> NewCredentials:
        robot = self._live(org, name)
        token = new_token()
        robot.rotate(hash_token(token), actor)
        self.save(robot)
        return NewCredentials(robot.username, token)

    def set_repositories(self, org: str, name: str, repositories: list[str], actor: str, note: str = "") -> RobotInfo:
        robot = self._live(org, name)
        if robot.role != Role.ROBOT.value:
            raise InvalidAccount(f"{robot.username} is an org admin: it may pull every repository of {org}",
                                 "repositories")
        robot.change_repositories(list(check_patterns(repositories)), actor, note)
        self.save(robot)
        return info(robot)

    def disable(self, org: str, name: str, actor: str, disabled: bool = True) -> RobotInfo:
        robot = self._live(org, name)
        robot.disable(actor) if disabled else robot.enable(actor)
        self.save(robot)
        return info(robot)

    def delete(self, org: str, name: str, actor: str) -> None:
        robot = self._live(org, name)
        robot.delete(actor)
        self.save(robot)

    def robot(self, org: str, name: str) -> RobotInfo:
        return info(self._live(org, name))

    def robots(self, org: str) -> list[RobotInfo]:
        """Every live robot of `org`, by name."""
        found = {}
        for notification in self._scan(get_topic(Robot.Created)):
            robot = self._robot_by_id(notification.originator_id)
            if robot is not None and robot.org == org and not robot.deleted:
                found[robot.name] = info(robot)
        return [found[name] for name in sorted(found)]

    def verify(self, username: str, token: str) -> Principal | None:
        """The principal of a robot's credentials; None when unknown, disabled, deleted or the token is wrong.

        Slow by design (scrypt): callers cache what it answers (Authenticator).
        """
        try:
            org, name = split_username(username)
        except InvalidAccount:
            return None
        robot = self._robot(org, name)
        if robot is None or robot.deleted or robot.disabled or not token_matches(token, robot.token_hash):
            return None
        return robot.principal()

    # -- the admin actions log -----------------------------------------------------------------------
    def record_action(self, actor: str, action: str, org: str, target: str, detail: str, at: float) -> None:
        self.save(AdminAction(actor=actor, action=action, org=org, target=target, detail=detail, at=at))

    def actions(self, org: str | None = None, actor: str | None = None, after: int = 0,
                limit: int = 100) -> list[AdminLogRow]:
        """Admin actions in the order they happened, after notification id `after`."""
        rows: list[AdminLogRow] = []
        for notification in self._scan(get_topic(AdminAction.Recorded), after):
            event = self.mapper.to_domain_event(notification)
            if (org is None or event.org == org) and (actor is None or event.actor == actor):
                rows.append(AdminLogRow(notification.id, event.actor, event.action, event.org, event.target,
                                        event.detail, event.at))
                if len(rows) >= limit:
                    break
        return rows

    # -- reading ---------------------------------------------------------------------------------------
    def _scan(self, topic: str, after: int = 0):
        start = after + 1
        while True:
            page = self.recorder.select_notifications(start=start, limit=_SCAN, topics=[topic])
            yield from page
            if len(page) < _SCAN:
                return
            start = page[-1].id + 1

    def _robot(self, org: str, name: str) -> Robot | None:
        return self._robot_by_id(Robot.create_id(org, name))

    def _robot_by_id(self, robot_id: UUID) -> Robot | None:
        try:
            return self.repository.get(robot_id)
        except AggregateNotFoundError:
            return None

    def _live(self, org: str, name: str) -> Robot:
        robot = self._robot(org, name)
        if robot is None or robot.deleted:
            raise RobotUnknown(f"no robot {robot_username(org, name)}")
        return robot


def info(robot: Robot) -> RobotInfo:
    return RobotInfo(robot.username, robot.name, robot.org, robot.role, list(robot.repositories), robot.disabled)
