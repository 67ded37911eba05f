"""What an operator reads in the server log at INFO: upstream failures, back-off, stale serves, fills, refusals.

One line each, naming the org, the repository and the reason. A line repeated with the same key (the
same kind of event for the same org, repository and cause) is written once per `REPEAT_SECONDS`; the
next one written says how many were left out meanwhile. Nothing here is called on a warm hit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cachetools import LRUCache

from application.oci_errors import INTERNAL_ERROR, oci_answer
from application.ports import Clock, UpstreamTarget

log = logging.getLogger("entrepot")
REPEAT_SECONDS = 60.0
MIB = 1024 * 1024


@dataclass
class _Seen:
    since: float        # when the line with this key was last written
    left_out: int = 0   # lines with this key not written since


class RepeatLimit:
    """Lets a key through once per `seconds` (by the injected clock); counts the ones it holds back."""

    def __init__(self, clock: Clock, seconds: float = REPEAT_SECONDS, keys: int = 10_000) -> None:
        self._clock, self.seconds = clock, seconds
        self._seen: LRUCache = LRUCache(maxsize=keys)   # bounded: a flood of distinct keys evicts the oldest

    def admit(self, key: tuple) -> int | None:
        """None: hold this one back. Otherwise how many with this key were held back since the last one."""
        now = self._clock.now()
        seen = self._seen.get(key)
        if seen is not None and now - seen.since < self.seconds:
            seen.left_out += 1
            return None
        self._seen[key] = _Seen(now)
        return seen.left_out if seen is not None else 0


class OpsLog:
    def __init__(self, clock: Clock, seconds: float = REPEAT_SECONDS, logger: logging.Logger = log) -> None:
        self._limit = RepeatLimit(clock, seconds)
        self._log = logger

    def _say(self, key: tuple, message: str) -> None:
        left_out = self._limit.admit(key)
        if left_out is None:
            return
        if left_out:
            message += f" ({left_out} more like this not logged in the last {self._limit.seconds:g}s)"
        self._log.info(message)

    def upstream_failed(self, target: UpstreamTarget, error: Exception) -> None:
        reason = getattr(error, "message", None) or str(error)
        self._say(("upstream", target.org, target.repository, type(error).__name__),
                  f"upstream failure: org {target.org} repository {target.repository}: {reason}")

    def backoff_opened(self, target: UpstreamTarget, seconds: float, reason: str) -> None:
        self._say(("backoff", target.base_url),
                  f"upstream back-off: org {target.org} repository {target.repository}: {target.base_url} is not "
                  f"asked for {seconds:g}s ({reason})")

    def served_stale(self, org: str, repository: str, reference: str, warning: str | None) -> None:
        reason = warning or "upstream failed"
        self._say(("stale", org, repository, reference),
                  f"served stale: org {org} repository {repository} reference {reference}: {reason}")

    def refused(self, org: str, repository: str, reference: str, error: Exception) -> None:
        """An error answer other than a plain 404: the client learns only the status, the log says why."""
        answer = oci_answer(error) or INTERNAL_ERROR
        if answer.status == 404:
            return
        self._say(("refused", org, repository, answer.code),
                  f"refused: org {org} repository {repository} reference {reference}: {answer.status} {answer.code}: "
                  f"{answer.message}")

    def fill_started(self, target: UpstreamTarget, digest: str, size: int | None) -> None:
        size_text = f"{size} bytes" if size is not None else "size unknown"
        self._say(("fill", digest, "started"),
                  f"fill started: org {target.org} repository {target.repository} blob {digest} ({size_text})")

    def fill_finished(self, target: UpstreamTarget, digest: str, size: int, seconds: float) -> None:
        rate = f"{size / MIB / seconds:.1f} MiB/s" if seconds > 0 else "instant"
        self._say(("fill", digest, "finished"),
                  f"fill finished: org {target.org} repository {target.repository} blob {digest}: {size} bytes in "
                  f"{seconds:.2f}s ({rate})")


class NoOpsLog(OpsLog):
    """Says nothing (decorators built without a log, e.g. in unit tests of other behaviour)."""

    def __init__(self) -> None:
        pass

    def _say(self, key: tuple, message: str) -> None:
        pass
