"""Point-in-time questions an auditor asks: what a tag resolved to at an instant, and who pulled a digest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from application.admin import InvalidRequest
from application.audit import AuditFilter, AuditLog, AuditPage
from application.errors import EntrepotError, OrgUnknown
from domain.names import InvalidName, InvalidReference, Tag, repository_name


MAX_RESOLUTIONS = 1000   # a digest some tag pointed at more often than this is no incident question


class TagHistoryReadModel(Protocol):
    """The history view (projections `history`): a tag's resolutions as intervals."""

    def at(self, org: str, repository: str, tag: str, at: float) -> Any | None: ...

    def before(self, org: str, repository: str, tag: str, at: float) -> Any | None: ...

    def after(self, org: str, repository: str, tag: str, at: float) -> Any | None: ...

    def previous(self, interval: Any) -> Any | None: ...

    def of_digest(self, digest: str, org: str | None = None, limit: int = 1000) -> list[Any]: ...


class TagNotCachedThen(EntrepotError):
    """The tag resolved to nothing in the cache at that instant; `around` says what came before and after."""

    def __init__(self, message: str, around: dict) -> None:
        super().__init__(message)
        self.around = around


@dataclass(frozen=True)
class TagAt:
    """What `org/repository:tag` resolved to at `at`, and the changes either side of it."""

    org: str
    repository: str
    tag: str
    at: float
    interval: Any            # the view's interval holding `at`
    previous: Any | None     # the resolution before it
    next: Any | None         # the change after it (its `since`); None while it still resolves there

    def as_dict(self) -> dict:
        return {"org": self.org, "repository": self.repository, "tag": self.tag, "at": self.at,
                **change(self.interval), "previous": change(self.previous), "next": change(self.next)}


def change(interval: Any | None) -> dict | None:
    """An interval as the API shows it: digest, since, until and what opened and ended it."""
    if interval is None:
        return None
    row = asdict(interval)
    return {key: row[key] for key in ("digest", "media_type", "since", "until", "opened_by", "ended_by")}


class History:
    def __init__(self, tags: TagHistoryReadModel, audit: AuditLog, org_known: Callable[[str], bool]) -> None:
        self._tags, self._audit, self._org_known = tags, audit, org_known

    def tag_at(self, org: str, repository: str, tag: str, at: float) -> TagAt:
        """The resolution holding `at`; TagNotCachedThen (with the changes around it) when there was none."""
        self._check_org(org)
        _check_repository(repository)
        try:
            Tag.parse(tag)
        except InvalidReference:
            raise InvalidRequest(f"invalid tag: {tag[:200]!r}", {"tag": "not a tag (the OCI tag grammar)"}) from None
        holding = self._tags.at(org, repository, tag, at)
        following = self._tags.after(org, repository, tag, at)
        if holding is None:
            # Before the first resolution, after a drop, or while the org was deleted.
            last = self._tags.before(org, repository, tag, at)
            raise TagNotCachedThen(f"{org}/{repository}:{tag} was not cached at that instant",
                                   {"previous": change(last), "next": change(following)})
        return TagAt(org, repository, tag, at, holding, self._tags.previous(holding), following)

    def digest_pulls(self, digest: str, since: float | None, until: float | None, org: str | None = None,
                     cursor: str | None = None, limit: int = 100) -> AuditPage:
        """Every pull answered with `digest`, by tag or by digest, in the audit's order; paged like the audit.

        The digest is checked by AuditFilter, as for the audit's own `digest` filter."""
        if org is not None:
            self._check_org(org)
        return self._audit.page(AuditFilter(org=org, since=since, until=until, digest=digest), cursor, limit)

    def resolutions(self, digest: str, org: str | None = None) -> list[dict]:
        """When tags pointed at `digest` (org, repository, tag and the interval), oldest first."""
        return [{"org": i.org, "repository": i.repository, "tag": i.tag, **change(i)}
                for i in self._tags.of_digest(digest, org, MAX_RESOLUTIONS)]

    def _check_org(self, org: str) -> None:
        # Deleted orgs are known: their history is what an auditor asks about.
        if not self._org_known(org):
            raise OrgUnknown(f"no cache organization named {org[:200]!r}, now or before", org=org)


def _check_repository(repository: str) -> None:
    try:
        repository_name(repository)
    except InvalidName as error:
        raise InvalidRequest(str(error)[:300], {"repository": "not a repository name"}) from None
