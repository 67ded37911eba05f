"""The admin API's error table: a database that is down is a 503 in the admin JSON shape, never a 500."""

import psycopg
import pytest
from eventsourcing.persistence import InterfaceError, OperationalError
from litestar import Litestar, get
from litestar.testing import TestClient
from psycopg_pool import PoolTimeout

from application.errors import EventStoreUnavailable, ReadModelUnavailable
from interfaces.http.admin_errors import admin_error_response

DATABASE_DOWN = [
    EventStoreUnavailable("the event store (PostgreSQL) is unavailable; try again shortly"),
    ReadModelUnavailable("the database did not answer reading the orgs within 2s"),
    OperationalError("connection refused"),
    InterfaceError("connection already closed"),
    psycopg.OperationalError("FATAL:  database \"x\" is not currently accepting connections"),
    PoolTimeout("couldn't get a connection after 3.00 sec"),
]


def answer_to(error: Exception):
    @get("/api/v1/organizations", sync_to_thread=False)
    def failing() -> None:
        raise error

    app = Litestar([failing], exception_handlers={Exception: admin_error_response})
    with TestClient(app) as client:
        return client.get("/api/v1/organizations")


@pytest.mark.parametrize("error", DATABASE_DOWN, ids=lambda e: type(e).__name__)
def test_an_admin_call_while_the_database_is_down_answers_503_in_the_admin_error_shape(error):
    response = answer_to(error)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["retry-after"] == "1"
    if not isinstance(error, (EventStoreUnavailable, ReadModelUnavailable)):   # a driver's text is not shown
        assert response.json()["error"]["message"] == "the database is unavailable; try again shortly"


def test_an_unexpected_error_is_still_a_500_internal():
    response = answer_to(RuntimeError("a bug"))
    assert response.status_code == 500 and response.json() == {"error": {"code": "internal", "message": "internal error"}}
