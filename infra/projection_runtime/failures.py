"""How the projection runtime logs a failure: one line while the database is away, a traceback otherwise."""

from __future__ import annotations

import logging

import psycopg
from eventsourcing.persistence import OperationalError


def database_away(error: BaseException) -> bool:
    """True for the errors an outage of the event store or the views' database raises (pool timeouts,
    refused or dropped connections): expected, retried, and a traceback per worker would only bury the cause."""
    return isinstance(error, (OperationalError, psycopg.OperationalError))


def log_failure(log: logging.Logger, message: str, *args: object, error: BaseException) -> None:
    if database_away(error):
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning(message + " (%s)", *args, first_line)
    else:
        log.error(message, *args, exc_info=error)
