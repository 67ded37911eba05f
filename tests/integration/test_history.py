"""Point in time and replay through the whole app, on SQLite and PostgreSQL.

A scripted history against a real registry: `latest` resolved, moved twice and flushed, pulled by
three clients (three loopback addresses, three user agents), with a ManualClock stepping an hour
between the moves. `history tag` answers each instant between them; `history digest` lists the
pulls by tag and by digest; `replay` to an instant equals the live views as they were then.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from domain.analytics import DEFAULT_MINUTE_DAYS, HOUR, minute_floor
from infra.projection_runtime import open_view
from infra.projection_runtime.point_in_time import ReplayTargetExists, replay_until
from infra.settings import AnalyticsSettings, DatabaseSettings, OrgSettings, Settings
from interfaces.cli import main
from projections.catalog import PROJECTION_NAMES
from tests.support.clock import ManualClock
from tests.support.images import build_image, push_image
from tests.support.inprocess import InProcessServer
from tests.support.postgres import BACKENDS

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
IMAGES = [build_image(f"history/{n}", layers=1, layer_size=2_000) for n in range(3)]
CLIENTS = {"a": ("127.0.0.1", "cluster-a/containerd"), "b": ("127.0.0.2", "cluster-b/podman"),
           "c": ("127.0.0.3", "cluster-c/skopeo")}
HOUR = 3600.0


class Script:
    """The app, its clients and what happened when (by the injected clock, and by the wall clock for replay)."""

    def __init__(self, server: InProcessServer, clock: ManualClock, upstream, tmp_path) -> None:
        self.server, self.clock, self.upstream, self.tmp_path = server, clock, upstream, tmp_path
        self.env = server.container.env
        self.admin = httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"})
        self.marks: dict[str, float] = {}
        self.digests = [image.digest for image in IMAGES]

    def pull(self, who: str, reference: str = "latest") -> httpx.Response:
        address, agent = CLIENTS[who]
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30) as client:
            response = client.get(f"{self.server.url}/v2/hub/library/app/manifests/{reference}",
                                  headers={**ACCEPT, "User-Agent": agent})
        assert response.status_code == 200, response.text
        return response

    def mark(self, name: str) -> None:
        """Between two steps: the clock moves on an hour on each side, so the mark is well inside the gap."""
        self.clock.advance(HOUR)
        self.marks[name] = self.clock.now()
        self.clock.advance(HOUR)

    def settle(self) -> None:
        self.server.container.runners.wait_caught_up(timeout=20)

    def tag_at(self, at: float) -> httpx.Response:
        return self.admin.get("/history/tag", params={"org": "hub", "repository": "library/app", "tag": "latest",
                                                      "at": repr(at)})

    def pulls_of(self, digest: str, **params) -> list[dict]:
        items, cursor = [], None
        while True:
            response = self.admin.get("/history/digest", params={"digest": digest, "limit": 2, **params,
                                                                 **({"cursor": cursor} if cursor else {})})
            assert response.status_code == 200, response.text
            items += response.json()["items"]
            if (cursor := response.json()["next_cursor"]) is None:
                return items


@contextmanager
def scripted(request, backend: str, upstream, tmp_path) -> Iterator[Script]:
    database = DatabaseSettings()
    if backend == "postgres":
        database = DatabaseSettings(url=request.getfixturevalue("postgres_url"), schema=f"h_{secrets.token_hex(3)}")
    settings = Settings(
        data_dir=str(tmp_path / "data"), admin_token=TOKEN, database=database,
        # No traffic report in the middle of the script: the replay compares views at an instant.
        analytics=AnalyticsSettings(traffic_interval_seconds=3600),
        organizations=(OrgSettings(name="hub", upstream=upstream.url, staleness_seconds=60),))
    clock = ManualClock()
    with InProcessServer(settings, clock=clock) as server:
        script = Script(server, clock, upstream, tmp_path)
        try:
            yield script
        finally:
            script.admin.close()


def run_script(s: Script) -> None:
    """The history every test below asks about."""
    d1, d2, d3 = s.digests
    push_image(s.upstream.url, "library/app", "latest", IMAGES[0])
    s.mark("before first")
    s.pull("a")                           # miss: latest resolved to d1
    s.pull("b")                           # hit
    s.mark("d1")
    push_image(s.upstream.url, "library/app", "latest", IMAGES[1])
    s.pull("c")                           # stale: revalidated, retargeted to d2
    s.pull("a", d1)                       # d1 by digest, still cached
    s.mark("d2")
    s.settle()
    assert s.admin.post("/organizations/hub/robots", json={"name": "ci", "repositories": ["library/*"]}).is_success
    s.settle()
    s.snapshot = snapshot(s.env)          # the live views at this instant...
    s.snapshot_at = time.time()           # ...which replay --until reproduces
    push_image(s.upstream.url, "library/app", "latest", IMAGES[2])
    s.pull("b")                           # retargeted to d3
    s.mark("d3")
    s.settle()                            # a flush acts on what the retention view holds
    flushed = s.admin.post("/organizations/hub/flush", json={"repository": "library/app", "tag": "latest"})
    assert flushed.status_code == 200 and flushed.json()["tags"] == 1, flushed.text
    assert s.admin.post("/organizations/hub/robots", json={"name": "late", "repositories": ["x/*"]}).is_success
    s.mark("after flush")
    s.settle()


@pytest.fixture(scope="module", params=BACKENDS)
def history(request, module_upstream_registry_factory, tmp_path_factory):
    """One scripted history per backend for the module: the tests only read it (and replay it elsewhere)."""
    with scripted(request, request.param, module_upstream_registry_factory(), tmp_path_factory.mktemp("history")) as s:
        s.backend = request.param
        run_script(s)
        yield s


def test_history_tag_answers_each_instant_between_the_moves(history):
    d1, d2, d3 = history.digests
    m = history.marks
    before = history.tag_at(m["before first"])
    assert before.status_code == 404
    assert before.json()["error"]["code"] == "not_found"
    assert before.json()["error"]["previous"] is None and before.json()["error"]["next"]["digest"] == d1

    answers = {name: history.tag_at(m[name]).json() for name in ("d1", "d2", "d3")}
    assert {name: answer["digest"] for name, answer in answers.items()} == {"d1": d1, "d2": d2, "d3": d3}
    first, second, third = answers["d1"], answers["d2"], answers["d3"]
    assert m["before first"] < first["since_epoch"] < m["d1"] < first["until_epoch"] == second["since_epoch"] < m["d2"]
    assert m["d2"] < second["until_epoch"] == third["since_epoch"] < m["d3"] < third["until_epoch"] < m["after flush"]
    assert (first["opened_by"], first["ended_by"], third["ended_by"]) == ("resolved", "retargeted", "flush")
    assert first["previous"] is None and first["next"]["digest"] == d2
    assert second["previous"]["digest"] == d1 and second["next"]["digest"] == d3
    assert third["previous"]["digest"] == d2 and third["next"] is None
    assert first["since"].endswith("Z")   # ISO 8601 for people, *_epoch for scripts

    dropped = history.tag_at(m["after flush"])
    assert dropped.status_code == 404
    assert dropped.json()["error"]["previous"]["digest"] == d3
    assert dropped.json()["error"]["previous"]["ended_by"] == "flush" and dropped.json()["error"]["next"] is None


def test_history_digest_lists_every_pull_by_tag_and_by_digest(history):
    d1, d2, d3 = history.digests
    pulls = history.pulls_of(d1)   # two rows a page: the cursor is followed
    assert [(p["client"], p["user_agent"], p["via"], p["result"]) for p in pulls] == [
        ("127.0.0.1", "cluster-a/containerd", "tag", "miss"),
        ("127.0.0.2", "cluster-b/podman", "tag", "hit"),
        ("127.0.0.1", "cluster-a/containerd", "digest", "hit"),
    ]
    assert {(p["org"], p["repository"], p["actor"]) for p in pulls} == {("hub", "library/app", "anonymous")}
    assert [p["reference"] for p in pulls] == ["latest", "latest", d1]
    assert [(p["client"], p["via"]) for p in history.pulls_of(d2)] == [("127.0.0.3", "tag")]
    assert [(p["client"], p["via"]) for p in history.pulls_of(d3)] == [("127.0.0.2", "tag")]
    # since/until bound the pulls' own times (the audit's clock)
    assert [p["client"] for p in history.pulls_of(d1, since=repr(history.marks["d1"]))] == ["127.0.0.1"]
    assert history.pulls_of(d1, until=repr(history.marks["before first"])) == []
    assert len(history.pulls_of(d1, org="hub")) == 3
    # When tags pointed at each digest, with the first page.
    first = history.admin.get("/history/digest", params={"digest": d2}).json()
    assert [(r["tag"], r["opened_by"], r["ended_by"]) for r in first["resolutions"]] == [("latest", "retargeted",
                                                                                          "retargeted")]
    assert first["resolutions"][0]["since_epoch"] < history.marks["d2"] < first["resolutions"][0]["until_epoch"]
    # The audit API takes the same filter.
    audit = history.admin.get("/audit", params={"digest": d1}).json()["items"]
    assert [row["id"] for row in audit] == [p["id"] for p in pulls]
    assert history.admin.get("/audit", params={"digest": "sha256:x"}).status_code == 422


def test_history_commands_print_the_same_answers(history, capsys):
    d1 = history.digests[0]
    common = ["--url", history.server.url, "--token", TOKEN]
    assert main(["history", "tag", "hub", "library/app", "latest", "--at", repr(history.marks["d1"]), "--json",
                 *common]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == d1
    assert main(["history", "tag", "hub", "library/app", "latest", "--at", repr(history.marks["before first"]),
                 *common]) == 3
    assert "was not cached" in capsys.readouterr().out
    assert main(["history", "digest", d1, *common]) == 0
    table = capsys.readouterr().out
    assert "hub/library/app:latest" in table and "cluster-b/podman" in table
    assert main(["history", "digest", d1, "--format", "jsonl", *common]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["client"], line["via"]) for line in lines] == [("127.0.0.1", "tag"), ("127.0.0.2", "tag"),
                                                                  ("127.0.0.1", "digest")]


def test_replay_to_an_instant_equals_the_live_views_then(history, tmp_path):
    out = tmp_path / "audit" / "then.db"
    report = replay_until(history.env, history.snapshot_at, out)
    assert report.out == out
    replayed = file_tables(out)
    # The analytics view's minute floor follows the clock: the replay's is the one of the instant; the live
    # view's, of its last page a moment before it (an hour earlier when an hour began in between).
    floor = minute_floor(history.snapshot_at, DEFAULT_MINUTE_DAYS)
    assert replayed.pop("analytics_minute_floor") == [(1, floor)]
    assert history.snapshot["analytics_minute_floor"][0][1] in (floor, floor - HOUR)
    # PostgreSQL's audit view lists its distinct agents in a table of its own (SQLite's index walks them):
    # those of the replayed rows.
    if "audit_agents" in history.snapshot:
        assert history.snapshot["audit_agents"] == sorted({(row[8],) for row in replayed["audit"]})
    for table, rows in history.snapshot.items():
        if table not in ("analytics_minute_floor", "audit_agents"):
            assert replayed.pop(table) == rows, table
    info = dict(sqlite3.connect(out).execute("SELECT key, value FROM replay_info").fetchall())
    assert float(info["until_epoch"]) == history.snapshot_at
    # Robots as they stood: `ci` existed, `late` did not yet.
    assert [(r[0], r[1], r[3], json.loads(r[4])) for r in replayed.pop("robots")] == [("hub+ci", "hub", "robot", ["library/*"])]
    assert [r[2] for r in replayed.pop("admin_log")] == ["robot.create"]
    assert set(replayed) == {"replay_info", "replay_events"}
    # The live views went on, untouched by the replay.
    assert snapshot(history.env) != history.snapshot

    with pytest.raises(ReplayTargetExists):
        replay_until(history.env, history.snapshot_at, out)
    now = replay_until(history.env, time.time(), out, force=True)
    assert file_tables(now.out)["tag_history"] == snapshot(history.env)["tag_history"]


def test_replay_command_refuses_an_existing_file_and_a_bad_time(history, tmp_path, capsys):
    out = tmp_path / "x.db"
    out.write_text("keep me")
    data_dir = ["--data-dir", str(history.server.data_dir)]
    assert main(["replay", "--until", "1h", "--out", str(out), *data_dir]) == 1
    assert "--force" in capsys.readouterr().err and out.read_text() == "keep me"
    assert main(["replay", "--until", "yesterday-ish", "--out", str(out), "--force", *data_dir]) == 2
    assert "expected ISO 8601" in capsys.readouterr().err and out.read_text() == "keep me"
    if history.backend == "sqlite":   # the data directory is the whole store: the command replays it
        assert main(["replay", "--until", repr(time.time()), "--out", str(out), "--force", *data_dir]) == 0
        assert "replayed the history" in capsys.readouterr().out
        assert file_tables(out)["tag_history"] == snapshot(history.env)["tag_history"]


@pytest.mark.parametrize("params, status, field", [
    ({"digest": "sha256:nothex"}, 422, "digest"),
    ({"digest": "md5:" + "a" * 32}, 422, "digest"),
    ({}, 422, "digest"),
    ({"digest": "sha256:" + "a" * 64, "since": "last tuesday"}, 422, "since"),
    ({"digest": "sha256:" + "a" * 64, "org": "nope"}, 404, None),
])
def test_bad_history_digest_requests_are_json_errors(history, params, status, field):
    response = history.admin.get("/history/digest", params=params)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == ("invalid" if status == 422 else "not_found")
    if field:
        assert field in error["fields"]


@pytest.mark.parametrize("params, status, field", [
    ({"org": "hub", "repository": "library/app", "tag": "latest", "at": "not a time"}, 422, "at"),
    ({"org": "hub", "repository": "library/app", "tag": "la:test"}, 422, "tag"),
    ({"org": "hub", "repository": "Library/App", "tag": "latest"}, 422, "repository"),
    ({"org": "hub", "tag": "latest"}, 422, "repository"),
    ({"org": "nope", "repository": "library/app", "tag": "latest"}, 404, None),
    ({"org": "hub", "repository": "library/other", "tag": "latest"}, 404, None),
])
def test_bad_history_tag_requests_are_json_errors(history, params, status, field):
    response = history.admin.get("/history/tag", params=params)
    assert response.status_code == status, response.text
    if field:
        assert field in response.json()["error"]["fields"]


def snapshot(env: dict) -> dict[str, list[tuple]]:
    """Every view's tables (not tracking), rows normalised so that PostgreSQL's and SQLite's compare."""
    tables = {}
    for name in PROJECTION_NAMES:
        view = open_view(name, env)
        try:
            for table, rows in view.dump().items():
                if table != "tracking":
                    tables[table] = normalised(rows)
        finally:
            view.close()
    return tables


def file_tables(path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        names = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {name: normalised(db.execute(f'SELECT * FROM "{name}"').fetchall()) for name in names}


def normalised(rows) -> list[tuple]:
    def value(v):
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, (dict, list)):
            return json.dumps(v, sort_keys=True)
        if isinstance(v, str) and v[:1] in "[{":
            try:
                return json.dumps(json.loads(v), sort_keys=True)
            except ValueError:
                return v
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v
    return sorted((tuple(value(v) for v in row) for row in rows), key=repr)



def test_history_is_the_admins_and_an_org_admin_sees_its_own_org_as_in_the_audit(history):
    created = history.admin.post("/organizations/hub/admins", json={"name": "lead"})
    assert created.status_code == 201, created.text
    lead = httpx.BasicAuth(created.json()["username"], created.json()["token"])
    tag = {"org": "hub", "repository": "library/app", "tag": "latest", "at": repr(history.marks["d1"])}
    digest = {"digest": history.digests[0]}
    with httpx.Client(base_url=f"{history.server.url}/api/v1") as anyone:
        for path, params in (("/history/tag", tag), ("/history/digest", digest)):
            assert anyone.get(path, params=params).status_code == 401
            # its own org: what the global admin is answered (the digest's pulls: of hub only, whatever it asks)
            own = anyone.get(path, params=params, auth=lead)
            assert own.status_code == 200 and own.json() == history.admin.get(path, params=params).json(), own.text
            refused = anyone.get(path, params={**params, "org": "elsewhere"}, auth=lead)
            assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
        schema = anyone.get(f"{history.server.url}/schema/openapi.json").json()
    assert {"/api/v1/history/tag", "/api/v1/history/digest"} <= set(schema["paths"])


def test_the_replay_benchmark_runs(tmp_path):
    """bench/replay.py on a few events: it works (it measures nothing at this size)."""
    out = tmp_path / "replay.json"
    done = subprocess.run([sys.executable, "-m", "bench.replay", "--pulls", "50", "--images", "5", "--backend", "sqlite",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "replay/rebuild" in done.stdout
    assert json.loads(out.read_text())["results"][0]["events"] == 50 + 1 + 5 * 7
