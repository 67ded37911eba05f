"""A real `entrepot serve` on PostgreSQL while the database refuses connections: alive, failing fast, back quickly."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest

from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration
ACCEPT = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
OUTAGE_SECONDS = 10


class BlockedDatabase:
    """ALTER DATABASE ... ALLOW_CONNECTIONS false and every backend terminated: what an outage looks like to us."""

    def __init__(self, postgres_url: str) -> None:
        self.dbname = postgres_url.rsplit("/", 1)[1]
        self.admin_url = postgres_url.rsplit("/", 1)[0] + "/postgres"

    def block(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                          (self.dbname,))

    def unblock(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{self.dbname}" ALLOW_CONNECTIONS true')


def timed(call) -> tuple[float, httpx.Response | Exception]:
    started = time.monotonic()
    try:
        answer = call()
    except httpx.HTTPError as error:
        answer = error
    return time.monotonic() - started, answer


def test_a_serve_on_postgresql_stays_alive_fails_fast_and_recovers_when_the_database_refuses_connections(
        postgres_url, upstream_registry, entrepot_server_factory):
    image = build_image("outage", layers=1, layer_size=10_000)
    for tag in ("warm", *(f"cold{n}" for n in range(60))):
        push_image(upstream_registry.url, "library/outage", tag, image)
    server = entrepot_server_factory([{"name": "hub", "upstream": upstream_registry.url}],
                                     sections={"database": {"url": postgres_url, "schema": "outage"}})
    client = httpx.Client(base_url=server.url, timeout=30)
    manifest = "/v2/hub/library/outage/manifests/{}"
    assert client.get(manifest.format("warm"), headers={"Accept": ACCEPT}).status_code == 200
    assert client.get("/readyz").json()["event_store"] == "ok"

    database = BlockedDatabase(postgres_url)
    health: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def probe_liveness() -> None:   # its own connection, at the same time as the pulls
        with httpx.Client(base_url=server.url, timeout=10) as probe:
            while not stop.is_set():
                took, answer = timed(lambda: probe.get("/healthz"))
                health.append((took, getattr(answer, "status_code", repr(answer))))
                time.sleep(0.1)

    cold = iter(range(60))
    pulls: list[tuple[float, int | str, str]] = []
    ready: list[tuple[int, dict]] = []
    database.block()
    prober = threading.Thread(target=probe_liveness, daemon=True)
    prober.start()
    try:
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:
            took, answer = timed(lambda: client.get(manifest.format(f"cold{next(cold)}"), headers={"Accept": ACCEPT}))
            code = getattr(answer, "status_code", repr(answer))
            body = answer.text[:200] if isinstance(answer, httpx.Response) else ""
            pulls.append((took, code, body))
            response = client.get("/readyz")
            ready.append((response.status_code, response.json()))
    finally:
        database.unblock()
    unblocked = time.monotonic()
    recovered = None
    while time.monotonic() - unblocked < 15:
        answer = client.get(manifest.format(f"cold{next(cold)}"), headers={"Accept": ACCEPT})
        if answer.status_code == 200:
            recovered = time.monotonic() - unblocked
            break
        time.sleep(0.1)
    stop.set()
    prober.join(15)
    ready_after = client.get("/readyz").json()

    assert health and all(code == 200 for _, code in health), health
    assert max(took for took, _ in health) < 1.0, sorted(health)[-5:]
    assert pulls and all(code == 503 for _, code, _ in pulls), pulls
    assert all('"UNAVAILABLE"' in body for _, _, body in pulls), pulls[:3]
    assert max(took for took, _, _ in pulls) < 5.0, pulls
    assert all(status == 503 and body["status"] == "unavailable" and body["event_store"] == "unavailable"
               for status, body in ready[1:]), ready
    assert recovered is not None and recovered < 5.0, (recovered, server.log_tail())
    assert ready_after["event_store"] == "ok"
    # An outage is expected and retried: one line per failure, not a traceback per projection worker.
    assert "Traceback" not in server.log_path.read_text(), server.log_tail(80)
    client.close()


def test_sigterm_stops_a_serve_on_postgresql_while_the_database_refuses_connections(
        postgres_url, upstream_registry, entrepot_server_factory):
    server = entrepot_server_factory([{"name": "hub", "upstream": upstream_registry.url}],
                                     sections={"database": {"url": postgres_url, "schema": "sigterm"}})
    database = BlockedDatabase(postgres_url)
    database.block()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            codes = {client.get(f"/v2/hub/library/x/manifests/t{n}").status_code for n in range(3)}
        started = time.monotonic()
        code = server.stop(timeout=30)
        took = time.monotonic() - started
    finally:
        database.unblock()
    assert codes == {503}
    assert code == 0 and took < 10, (code, took)


TOKEN = "outage-admin-token"
PROBE = "outage-probe/1.0"


def audited(admin: httpx.Client, user_agent: str) -> list[dict]:
    response = admin.get("/api/v1/audit", params={"user_agent": user_agent, "limit": 1000})
    return response.json()["items"] if response.status_code == 200 else []


def test_warm_pulls_are_served_while_the_database_refuses_connections_and_audited_once_each_when_it_is_back(
        postgres_url, upstream_registry, entrepot_server_factory):
    image = build_image("warm-outage", layers=2, layer_size=20_000)
    cold = build_image("cold-outage", layers=1, layer_size=10_000)
    push_image(upstream_registry.url, "library/warm", "1.0", image)
    push_image(upstream_registry.url, "library/warm", "cold", cold)
    server = entrepot_server_factory([{"name": "hub", "upstream": upstream_registry.url}],
                                     sections={"database": {"url": postgres_url, "schema": "warm_outage"}},
                                     env={"ENTREPOT_ADMIN_TOKEN": TOKEN})
    client = httpx.Client(base_url=server.url, timeout=30, headers={"Accept": ACCEPT})
    admin = httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"})
    by_tag, by_digest = "/v2/hub/library/warm/manifests/1.0", f"/v2/hub/library/warm/manifests/{image.digest}"
    blob = "/v2/hub/library/warm/blobs/{}".format
    # Warm: the tag, the manifest by digest and every blob, each served once before the outage.
    assert client.get(by_tag).content == image.manifest_bytes
    assert client.get(by_digest).content == image.manifest_bytes
    for digest, data in image.blobs.items():
        assert client.get(blob(digest)).content == data
    time.sleep(0.5)   # a fill records its blob after the client has the last byte
    for digest, data in image.blobs.items():   # now known held for the org in this process
        assert client.get(blob(digest)).content == data

    database = BlockedDatabase(postgres_url)
    served: list[tuple[str, int, bool | str]] = []
    slowest = 0.0
    database.block()
    try:
        for _ in range(5):
            for path in (by_tag, by_digest):
                took, answer = timed(lambda: client.get(path, headers={"User-Agent": PROBE}))
                served.append((path, answer.status_code, answer.content == image.manifest_bytes
                               or answer.text[:300]))
                slowest = max(slowest, took)
        blobs_ok = [(answer := client.get(blob(digest))).content == data or (answer.status_code, answer.text[:300])
                    for digest, data in image.blobs.items()]
        started = time.monotonic()
        uncached = client.get("/v2/hub/library/warm/manifests/cold", headers={"User-Agent": "outage-cold/1.0"})
        uncached_took = time.monotonic() - started
        admin_answers = [admin.get("/api/v1/organizations"), admin.get("/api/v1/audit")]
    finally:
        database.unblock()

    assert served == [(path, 200, True) for _ in range(5) for path in (by_tag, by_digest)], server.log_tail()
    assert slowest < 5.0, slowest    # at most one bounded view read (a tag row past its lifetime), no hang
    assert blobs_ok == [True] * len(image.blobs)
    assert uncached.status_code == 503 and '"UNAVAILABLE"' in uncached.text and uncached_took < 5.0
    assert [a.status_code for a in admin_answers] == [503, 503]
    assert all(a.json()["error"]["code"] == "unavailable" for a in admin_answers), [a.text for a in admin_answers]

    # Back: the pulls served during the outage reach the audit log within a few seconds, each once.
    deadline = time.monotonic() + 15
    rows: list[dict] = []
    while time.monotonic() < deadline and len(rows) < len(served):
        rows = audited(admin, PROBE)
        time.sleep(0.2)
    assert len(rows) == len(served), (rows, server.log_tail())
    assert len({row["id"] for row in rows}) == len(served)
    assert sorted(row["reference"] for row in rows) == sorted(["1.0", image.digest] * 5)
    assert {(row["result"], row["status"]) for row in rows} == {("hit", 200)}
    failed = audited(admin, "outage-cold")
    assert [(row["result"], row["status"], row["error_code"]) for row in failed] == [("error", 503, "UNAVAILABLE")]
    client.close()
    admin.close()
