"""Who may pull what: principals (anonymous, robots, org admins, the global admin) and the pull decision."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

ANONYMOUS = "anonymous"
GLOBAL_ADMIN = "admin"
MAX_ROBOT_NAME = 64
MAX_PATTERNS = 256
MAX_PATTERN = 255
# A robot's own name: lower-case letters, digits, `_`, `-` and `.`, as Quay's robot names.
_ROBOT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
# Patterns are repository paths inside the org with `*` and `?`: `library/*`, `bitnami/redis`, `*`.
_PATTERN = re.compile(r"^[a-z0-9*?]+(?:(?:[._/-]|__|-+)[a-z0-9*?]+)*$")


class Role(str, enum.Enum):
    ANONYMOUS = "anonymous"
    ROBOT = "robot"            # pulls the repositories its patterns name, in its own org
    ORG_ADMIN = "org-admin"    # manages its own org (settings, robots) and pulls all of it
    ADMIN = "admin"            # the global admin token: everything


class InvalidAccount(ValueError):
    """A robot name, username or repository pattern the access rules refuse; `field` names the input."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Principal:
    """Who a request comes from, once authenticated. `grants` (org/repository names) come from a token."""

    actor: str
    role: Role
    org: str = ""                                 # the org of a robot or org admin
    repositories: tuple[str, ...] = ()            # a robot's patterns
    grants: frozenset[str] | None = None          # a Bearer token: exactly these org/repository pulls

    @property
    def anonymous(self) -> bool:
        return self.role is Role.ANONYMOUS


ANONYMOUS_PRINCIPAL = Principal(ANONYMOUS, Role.ANONYMOUS)


class Verdict(str, enum.Enum):
    ALLOW = "allow"
    CHALLENGE = "challenge"          # anonymous where credentials are needed: 401 with a challenge
    INSUFFICIENT_SCOPE = "insufficient_scope"   # a token that does not grant this pull: 401, as distribution
    DENY = "deny"                    # authenticated, but not allowed: 403 DENIED


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW


ALLOWED = Decision(Verdict.ALLOW)


def may_pull(principal: Principal, org: str, repository: str, anonymous_pull: bool) -> Decision:
    """The pull decision for `repository` (the path inside `org`)."""
    if principal.grants is not None:   # a Bearer token: what the token endpoint granted, nothing more
        if f"{org}/{repository}" in principal.grants or anonymous_pull:
            return ALLOWED
        return Decision(Verdict.INSUFFICIENT_SCOPE, f"the token of {principal.actor} does not grant pull of "
                                                    f"{org}/{repository}")
    return rights(principal, org, repository, anonymous_pull)


def rights(principal: Principal, org: str, repository: str, anonymous_pull: bool) -> Decision:
    """What the principal's account itself may pull (the token endpoint asks this before granting)."""
    if principal.role is Role.ADMIN:
        return ALLOWED
    if principal.role is Role.ANONYMOUS:
        if anonymous_pull:
            return ALLOWED
        return Decision(Verdict.CHALLENGE, f"organization {org} does not allow anonymous pulls")
    if principal.org != org:
        if anonymous_pull:   # an open org is open to everyone, authenticated or not
            return ALLOWED
        return Decision(Verdict.DENY, f"{principal.actor} has no rights in organization {org}")
    if principal.role is Role.ORG_ADMIN or matches(principal.repositories, repository):
        return ALLOWED
    if anonymous_pull:
        return ALLOWED
    return Decision(Verdict.DENY, f"{principal.actor} may not pull {org}/{repository}")


def matches(patterns: tuple[str, ...] | list[str], repository: str) -> bool:
    """`*` matches any characters, `/` included (`library/*` covers `library/a/b`); `?` one character."""
    return any(fnmatchcase(repository, pattern) for pattern in patterns)


def robot_username(org: str, name: str) -> str:
    return f"{org}+{name}"


def split_username(username: str) -> tuple[str, str]:
    """("org", "name") of `org+name`; InvalidAccount for anything else."""
    org, plus, name = username.partition("+")
    if not plus or not org or not _ROBOT_NAME.match(name):
        raise InvalidAccount(f"not a robot username (<org>+<name>): {username[:100]!r}", "username")
    return org, name


def check_robot_name(name: str) -> str:
    if not isinstance(name, str) or not _ROBOT_NAME.match(name):
        raise InvalidAccount("name: 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting and ending with "
                             f"a letter or digit, got {str(name)[:100]!r}", "name")
    return name


def check_patterns(patterns: list[str]) -> tuple[str, ...]:
    """Repository patterns, deduplicated in order; InvalidAccount naming the first bad one."""
    if len(patterns) > MAX_PATTERNS:
        raise InvalidAccount(f"repositories: at most {MAX_PATTERNS} patterns, got {len(patterns)}", "repositories")
    for pattern in patterns:
        if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN or not _PATTERN.match(pattern):
            raise InvalidAccount(f"repositories: {str(pattern)[:100]!r} is not a repository pattern such as "
                                 "library/*, bitnami/redis or *", "repositories")
    return tuple(dict.fromkeys(patterns))
