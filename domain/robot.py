"""Robot accounts (`<org>+<name>`, a pull role or an org-admin role) and the admin actions log, with their actors.

A robot's token is never stored: only a slow hash of it (hashlib.scrypt, salted), so a copy of the
event store does not let anyone pull, and guessing tokens offline costs ~16 MiB and tens of ms each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.access import Principal, Role, robot_username

# scrypt cost: n=2**14, r=8 takes ~16 MiB and ~40 ms on this kind of machine; verified tokens are cached.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def new_token() -> str:
    """256 random bits, URL-safe; never starting with "-", which a command line would read as an option
    (`entrepot ... --token -abc` fails in argparse: one token in 64 did)."""
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def hash_token(token: str, n: int = SCRYPT_N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def token_matches(token: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest + "==")
        actual = hashlib.scrypt(token.encode(), salt=base64.urlsafe_b64decode(salt + "=="), n=int(n), r=int(r),
                                p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)   # the time taken says nothing about how much matched


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class RobotGone(Exception):
    """The robot was deleted: nothing but a new creation changes it."""


class Robot(Aggregate):
    """One account of one org. Deleting keeps the history; creating the same name again reinstates it."""

    class Created(Aggregate.Created):
        org: str
        name: str
        role: str
        repositories: list[str]
        token_hash: str
        actor: str
        note: str        # e.g. "repositories expanded from the 3 cached in the org"

    class Reinstated(Aggregate.Event):
        role: str
        repositories: list[str]
        token_hash: str
        actor: str
        note: str

    class RepositoriesChanged(Aggregate.Event):
        repositories: list[str]
        actor: str
        note: str

    class TokenRotated(Aggregate.Event):
        token_hash: str
        actor: str

    class Disabled(Aggregate.Event):
        actor: str

    class Enabled(Aggregate.Event):
        actor: str

    class Deleted(Aggregate.Event):
        actor: str

    @staticmethod
    def create_id(org: str, name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"entrepot:robot:{robot_username(org, name)}")

    @event(Created)
    def __init__(self, org: str, name: str, role: str, repositories: list[str], token_hash: str, actor: str,
                 note: str = "") -> None:
        self.org, self.name, self.role = org, name, role
        self.repositories, self.token_hash = list(repositories), token_hash
        self.disabled = self.deleted = False

    @property
    def username(self) -> str:
        return robot_username(self.org, self.name)

    def principal(self) -> Principal:
        return Principal(self.username, Role(self.role), self.org, tuple(self.repositories))

    def reinstate(self, role: str, repositories: list[str], token_hash: str, actor: str, note: str = "") -> None:
        self._reinstated(role=role, repositories=list(repositories), token_hash=token_hash, actor=actor, note=note)

    @event(Reinstated)
    def _reinstated(self, role: str, repositories: list[str], token_hash: str, actor: str, note: str) -> None:
        self.role, self.repositories, self.token_hash = role, list(repositories), token_hash
        self.disabled = self.deleted = False

    def change_repositories(self, repositories: list[str], actor: str, note: str = "") -> None:
        self._alive()
        self._repositories_changed(repositories=list(repositories), actor=actor, note=note)

    @event(RepositoriesChanged)
    def _repositories_changed(self, repositories: list[str], actor: str, note: str) -> None:
        self.repositories = list(repositories)

    def rotate(self, token_hash: str, actor: str) -> None:
        self._alive()
        self._rotated(token_hash=token_hash, actor=actor)

    @event(TokenRotated)
    def _rotated(self, token_hash: str, actor: str) -> None:
        self.token_hash = token_hash

    def disable(self, actor: str) -> None:
        self._alive()
        if not self.disabled:
            self._disabled(actor=actor)

    @event(Disabled)
    def _disabled(self, actor: str) -> None:
        self.disabled = True

    def enable(self, actor: str) -> None:
        self._alive()
        if self.disabled:
            self._enabled(actor=actor)

    @event(Enabled)
    def _enabled(self, actor: str) -> None:
        self.disabled = False

    def delete(self, actor: str) -> None:
        self._alive()
        self._deleted(actor=actor)

    @event(Deleted)
    def _deleted(self, actor: str) -> None:
        self.deleted = True
        self.token_hash = ""   # nothing left to verify against

    def _alive(self) -> None:
        if self.deleted:
            raise RobotGone(f"robot {self.username} was deleted")


class AdminAction(Aggregate):
    """One admin API call that changed something: who, what, on which org. Fresh id, one event (like Pull)."""

    class Recorded(Aggregate.Created):
        actor: str
        action: str      # "org.create", "robot.rotate", ...
        org: str
        target: str      # what was acted on: the org, or a robot's username
        detail: str      # what changed, never a secret
        at: float

    @event(Recorded)
    def __init__(self, actor: str, action: str, org: str, target: str, detail: str, at: float) -> None:
        self.actor, self.action, self.org, self.target, self.detail, self.at = actor, action, org, target, detail, at
