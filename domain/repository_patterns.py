"""Repository patterns (`library/*`, `bitnami/redis`, `*`): an org's allow and deny lists, compiled once."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache

# Lower-case name characters, `/`, and the wildcards `*` (any characters, `/` included) and `?` (one).
PATTERN = r"^[a-z0-9._/*?-]+\Z"   # \Z: `$` would let a trailing newline through
MAX_PATTERNS = 256


class RepositoryAccess:
    """An org's allow and deny lists as two compiled regexes (one match each per request)."""

    def __init__(self, allow: tuple[str, ...], deny: tuple[str, ...]) -> None:
        self.allow, self.deny = allow, deny
        self._allow = _compiled(allow)
        self._deny = _compiled(deny)

    def refusal(self, repository: str) -> str | None:
        """Why the upstream repository path `repository` may not be pulled, else None."""
        if self._deny is not None and self._deny.match(repository):
            pattern = next(p for p in self.deny if fnmatch.fnmatchcase(repository, p))
            return f"repository {repository!r} matches the organization's deny pattern {pattern!r}"
        if self._allow is not None and not self._allow.match(repository):
            return f"repository {repository!r} is not in the organization's allow list"
        return None

    def allowed_explicitly(self, repository: str) -> bool:
        """Named by the allow list (what `pull_through = "allow-list"` fetches on a miss)."""
        return self._allow is not None and self._allow.match(repository) is not None and self.refusal(repository) is None


def _compiled(patterns: tuple[str, ...]) -> re.Pattern | None:
    if not patterns:
        return None
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@lru_cache(maxsize=4096)
def repository_access(allow: tuple[str, ...], deny: tuple[str, ...]) -> RepositoryAccess:
    """One compiled RepositoryAccess per distinct (allow, deny): built when an org's settings are first
    seen, then a dictionary hit per request."""
    return RepositoryAccess(allow, deny)
