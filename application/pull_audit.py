"""The audit as a decorator around manifest answers: each pull served, and each one that failed after valid input, recorded."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from application.errors import OrgUnknown, PullNotRecorded, RepositoryDenied, UpstreamNotAsked
from application.manifests import ManifestAnswer, ManifestCache
from application.oci_errors import INTERNAL_ERROR, oci_answer
from application.orgs import OrgConfig
from application.ports import Clock
from application.pulls import OUTAGE_ERRORS, GroupCommit
from application.referrers import ReferrersAnswer, ReferrersCache
from domain.names import InvalidName, InvalidReference, Reference
from domain.pull import Pull, PullResult

log = logging.getLogger(__name__)

# What the pulls port (GroupCommit) raises, or a wait it outlived, when the event store is unavailable:
# the pull stays with it and is recorded once the event store takes writes again (or, past its
# bounds, is counted as unrecorded: Metrics.pulls_unrecorded). Either way the answer goes out.
RECORDED_LATER = OUTAGE_ERRORS

# The request itself was wrong: not a pull of anything, and nothing stored changes on bad input.
BAD_INPUT = (InvalidName, InvalidReference, OrgUnknown)


@dataclass(frozen=True)
class Client:
    address: str = ""
    user_agent: str = ""
    actor: str = "anonymous"    # who, once authenticated (domain/access.py); never a secret


def is_audited_failure(error: Exception) -> bool:
    """Every failure of a valid pull is audited (upstream errors, a negative-cache hit, storage
    trouble, a bug); bad input is not."""
    return not isinstance(error, BAD_INPUT)


class PullAudit:
    """Wraps the ManifestCache: the outcome of each manifest GET becomes a Pull, durable (group commit)
    before the answer goes out, or kept in the group commit's backlog during an event store outage."""

    def __init__(self, manifests: ManifestCache, pulls: GroupCommit, clock: Clock, timeout: float = 5.0,
                 referrers: ReferrersCache | None = None) -> None:
        self._manifests = manifests
        self._referrers = referrers
        self._pulls = pulls
        self._clock = clock
        self._timeout = timeout  # the longest a client waits for its pull to be recorded
        # GroupCommit bounds every wait under one shared timer (application/deadlines.py); a timer of
        # our own per pull on top (asyncio.timeout) cost a warm pull more than its tag lookup. A pulls
        # port that bounds nothing, or waits longer, gets one.
        bound = getattr(pulls, "wait_bound", None)
        self._own_timer = bound is None or bound > timeout

    async def manifest(self, org: OrgConfig, repository: str, reference: Reference, accept: list[str],
                       client: Client | None = None, record: bool = True) -> ManifestAnswer:
        """`record` is False for HEAD, which is not a pull. A pull that fails is recorded too
        (result `error`), unless its input was bad."""
        try:
            # A GET (record) is a client that goes on to the blobs: they may be prefetched.
            answer = await self._manifests.manifest(org, repository, reference, accept, prefetch=record)
        except Exception as error:
            if record:
                await self._failed(org, repository, str(reference), client, error)
            raise
        if record:
            await self._served(self._pull(org, repository, str(reference), client, digest=answer.digest,
                                          result=answer.result.value, note=answer.warning or answer.not_kept or ""))
        return answer

    async def referrers(self, org: OrgConfig, repository: str, subject: str, client: Client | None = None,
                        record: bool = True) -> ReferrersAnswer:
        """A referrers list is a pull of its own kind: reference `referrers:<subject digest>`, digest
        that of the whole list, result as for a tag (hit, miss, stale)."""
        if self._referrers is None:
            raise RuntimeError("no referrers cache wired")
        reference = f"referrers:{subject}"
        try:
            answer = await self._referrers.referrers(org, repository, subject)
        except Exception as error:
            if record:
                await self._failed(org, repository, reference, client, error)
            raise
        if record:
            await self._served(self._pull(org, repository, reference, client, digest=answer.digest,
                                          result=answer.result.value, note=answer.warning or ""))
        return answer

    async def _served(self, pull: Pull.Recorded) -> None:
        """Durable before the answer goes out, or kept: while the event store is unavailable (or does
        not answer within the bounded wait) the group commit keeps the pull and records it once the
        event store takes writes again, so the answer goes out. Any other failure to record is a
        503, not a 500 or a hang: an answer that would not be audited is not sent."""
        try:
            await self._record(pull)
        except RECORDED_LATER:
            return   # the group commit logs the outage, once per batch, not once per pull
        except Exception as error:
            log.warning("could not record the pull of %s/%s:%s: %s", pull.org, pull.repository, pull.reference,
                        error)
            raise PullNotRecorded("the pull could not be recorded in the audit log; try again") from error

    async def _record(self, pull: Pull.Recorded) -> None:
        if not self._own_timer:
            await self._pulls.record(pull)
            return
        try:
            async with asyncio.timeout(self._timeout):  # not wait_for: no extra task per pull
                await self._pulls.record(pull)
        except TimeoutError:
            raise TimeoutError(f"recording took longer than {self._timeout:g}s") from None

    async def _failed(self, org: OrgConfig | str, repository: str, reference: str, client: Client | None,
                      error: Exception) -> None:
        """Records a failed pull with what the client is answered; never raises, so that a
        recording problem cannot turn the original error answer into a 500."""
        if not is_audited_failure(error):
            return
        answer = oci_answer(error) or INTERNAL_ERROR
        result = PullResult.DENIED if isinstance(error, (RepositoryDenied, UpstreamNotAsked)) else PullResult.ERROR
        pull = self._pull(org, repository, reference, client, digest="", result=result.value,
                          note=answer.message, status=answer.status, error_code=answer.code)
        try:
            await self._record(pull)
        except RECORDED_LATER:
            pass
        except Exception:
            log.exception("could not record the failed pull of %s/%s:%s (%d %s); answering its error anyway",
                          pull.org, repository, reference, answer.status, answer.code)

    async def denied(self, org: OrgConfig | str, repository: str, reference: str, client: Client | None, reason: str,
                     status: int, error_code: str) -> None:
        """An attempt access control refused (failed authentication included): recorded, never raising."""
        pull = self._pull(org, repository, reference, client, digest="", result=PullResult.DENIED.value,
                          note=reason, status=status, error_code=error_code)
        try:
            await self._record(pull)
        except RECORDED_LATER:
            pass
        except Exception:
            log.exception("could not record the refused pull of %s/%s:%s; refusing it anyway", pull.org,
                          repository, reference)

    def _pull(self, org: OrgConfig | str, repository: str, reference: str, client: Client | None,
              **outcome) -> Pull.Recorded:
        # The OrgConfig says which generation of the org the pull counts for; a bare name is the first.
        client = client or Client()
        name, generation = (org, 1) if isinstance(org, str) else (org.name, org.generation)
        return Pull.recorded(org=name, generation=generation, repository=repository, reference=reference,
                             client=client.address,
                             user_agent=client.user_agent, actor=client.actor, at=self._clock.now(), **outcome)
