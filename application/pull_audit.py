"""Recording manifest pulls for the audit log: each one served, and each one that failed after valid input."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from application.errors import OrgUnknown
from application.oci_errors import INTERNAL_ERROR, oci_answer
from application.ports import Clock
from application.pulls import GroupCommit
from domain.names import InvalidName, InvalidReference
from domain.pull import Pull, PullResult

log = logging.getLogger(__name__)

# The request itself was wrong: not a pull of anything, and nothing stored changes on bad input.
BAD_INPUT = (InvalidName, InvalidReference, OrgUnknown)


@dataclass(frozen=True)
class Client:
    address: str = ""
    user_agent: str = ""


def is_audited_failure(error: Exception) -> bool:
    """Every failure of a valid pull is audited (upstream errors, a negative-cache hit, storage
    trouble, a bug); bad input is not."""
    return not isinstance(error, BAD_INPUT)


class PullAudit:
    """Turns the outcome of one manifest GET into a Pull and awaits its group commit."""

    def __init__(self, pulls: GroupCommit, clock: Clock) -> None:
        self._pulls = pulls
        self._clock = clock

    async def served(self, org: str, repository: str, reference: str, client: Client | None, digest: str,
                     result: PullResult, note: str = "") -> None:
        """Durable before the answer goes out; a failure to record reaches the caller."""
        await self._pulls.record(self._pull(org, repository, reference, client, digest=digest,
                                            result=result.value, note=note))

    async def failed(self, org: str, repository: str, reference: str, client: Client | None,
                     error: Exception) -> None:
        """Records a failed pull with what the client is answered; never raises, so that a
        recording problem cannot turn the original error answer into a 500."""
        if not is_audited_failure(error):
            return
        answer = oci_answer(error) or INTERNAL_ERROR
        pull = self._pull(org, repository, reference, client, digest="", result=PullResult.ERROR.value,
                          note=answer.message, status=answer.status, error_code=answer.code)
        try:
            await self._pulls.record(pull)
        except Exception:
            log.exception("could not record the failed pull of %s/%s:%s (%d %s); answering its error anyway",
                          org, repository, reference, answer.status, answer.code)

    def _pull(self, org: str, repository: str, reference: str, client: Client | None, **outcome) -> Pull:
        client = client or Client()
        return Pull(org=org, repository=repository, reference=reference, client=client.address,
                    user_agent=client.user_agent, at=self._clock.now(), **outcome)
