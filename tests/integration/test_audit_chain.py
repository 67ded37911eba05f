"""The audit hash chain on SQLite and PostgreSQL: the chain view, seals, and `audit verify` against edited,
deleted and forged records (issue 14, tamper evidence)."""

from __future__ import annotations

import json
import sqlite3

import psycopg
import pytest
from psycopg import sql

from application.access import Access
from application.audit_seals import AuditSeals, read_seals
from application.audit_verify import verify
from application.pulls import Pulls
from domain.audit_chain import GENESIS, AuditSeal, ChainHead, canonical, next_link
from domain.pull import Pull
from infra.projection_runtime import open_view
from infra.projection_runtime.runners import ProjectionRunners
from infra.seal_file import SealFile
from tests.support.audit_store import config_for
from tests.support.cli import run_in_process
from tests.support.clock import ManualClock

pytestmark = pytest.mark.integration


@pytest.fixture
def env(env_factory):
    return env_factory("main")


@pytest.fixture
def store(env):
    pulls, access = Pulls(env=env), Access(env=env)
    chain = open_view("chain", env)
    runners = ProjectionRunners(env, ["chain"]).start()
    yield pulls, access, chain, runners
    runners.stop()
    chain.close()
    pulls.close()
    access.close()


def record_history(pulls: Pulls, access: Access, n: int = 12, robot: str = "ci") -> None:
    """Pulls by three clients, admin actions and a robot, interleaved with traffic reports (not chained)."""
    for i in range(n):
        pulls.record(Pull(org="hub", repository="library/alpine", reference="3.20", digest="sha256:" + "a" * 64,
                          result="hit" if i % 3 else "miss", client=f"10.0.0.{i % 3}", user_agent="skopeo",
                          at=1_000.0 + i, actor="anonymous"))
        if i % 4 == 0:
            access.record_action("admin", "org.update", "hub", "hub", f"change {i}", 1_000.0 + i)
    access.create_robot("hub", robot, ["library/*"], actor="admin")


def caught_up(runners) -> None:
    runners.wait_caught_up(timeout=20)


def edit_state(env: dict, table_app: str, position: int, state: bytes) -> None:
    """The tampering an operator with database access could do: rewrite a stored event's bytes."""
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        with sqlite3.connect(env[f"{table_app.upper()}_SQLITE_DBNAME"]) as conn:
            assert conn.execute("UPDATE stored_events SET state = ? WHERE rowid = ?", (state, position)).rowcount == 1
        return
    with _pg(env) as conn:
        assert conn.execute(sql.SQL("UPDATE {} SET state = %s WHERE notification_id = %s").format(
            sql.Identifier(env["POSTGRES_SCHEMA"], f"{table_app.lower()}_events")), (state, position)).rowcount == 1


def delete_event(env: dict, table_app: str, position: int) -> None:
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        with sqlite3.connect(env[f"{table_app.upper()}_SQLITE_DBNAME"]) as conn:
            assert conn.execute("DELETE FROM stored_events WHERE rowid = ?", (position,)).rowcount == 1
        return
    with _pg(env) as conn:
        assert conn.execute(sql.SQL("DELETE FROM {} WHERE notification_id = %s").format(
            sql.Identifier(env["POSTGRES_SCHEMA"], f"{table_app.lower()}_events")), (position,)).rowcount == 1


def _pg(env: dict) -> psycopg.Connection:
    return psycopg.connect(host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"], user=env["POSTGRES_USER"],
                           dbname=env["POSTGRES_DBNAME"], autocommit=True)


def check(pulls, access, chain):
    return verify({"Pulls": pulls, "Access": access}, chain, read_seals(access))


def nth_pull(pulls: Pulls, n: int):
    page = pulls.recorder.select_notifications(start=1, limit=1000, topics=["domain.pull:Pull.Recorded"])
    return page[n]


def test_the_chain_view_holds_one_link_per_pull_and_admin_event_computed_from_the_stored_bytes(store):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    rows = chain.links("Pulls")
    assert [r.count for r in rows] == list(range(1, 13))
    first = nth_pull(pulls, 0)
    expected = next_link(GENESIS, "Pulls", first.id, first.originator_id, first.originator_version, first.topic,
                         first.state)
    assert rows[0].link == expected.hex() and rows[0].event_id == str(first.originator_id)
    assert chain.head("Pulls") == ChainHead("Pulls", rows[-1].position, 12, rows[-1].link)
    assert chain.head("Access").count == 4   # three admin actions and the robot
    assert check(pulls, access, chain).ok


def test_canonical_bytes_are_length_prefixed_so_fields_cannot_borrow_from_each_other():
    one = canonical("Pulls", 1, "00000000-0000-0000-0000-000000000001", 1, "a:B", b"xy")
    other = canonical("Pulls", 1, "00000000-0000-0000-0000-000000000001", 1, "a:Bx", b"y")
    assert one != other


def test_verify_passes_on_an_untouched_store_with_seals(store, tmp_path):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    seals = AuditSeals(access, chain, ManualClock(), export=SealFile(str(tmp_path / "seals.jsonl")))
    first = seals.seal("admin")
    record_history(pulls, access, n=5, robot="ci2")
    caught_up(runners)
    second = seals.seal("system")
    caught_up(runners)
    report = check(pulls, access, chain)
    assert report.ok, report.mismatch
    assert report.checked == {"Pulls": 17, "Access": 9}    # 4 + 3 admin events, 2 seals
    assert report.seals_checked == 4                         # two seals, two chains each
    shipped = [json.loads(line) for line in (tmp_path / "seals.jsonl").read_text().splitlines()]
    assert [s["seal"] for s in shipped] == [first.id, second.id]
    assert shipped[0]["heads"][0] == {"application": "Pulls", "position": first.head("Pulls").position,
                                      "count": 12, "link": first.head("Pulls").link}
    # --since: the first seal is trusted, only what follows it is recomputed
    since = verify({"Pulls": pulls, "Access": access}, chain, read_seals(access), since=first.id)
    assert since.ok and since.checked == {"Pulls": 5, "Access": 5}


def test_verify_names_a_pull_whose_stored_bytes_were_edited(store, env):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    AuditSeals(access, chain, ManualClock()).seal("admin")
    victim = nth_pull(pulls, 7)
    edit_state(env, "Pulls", victim.id, victim.state.replace(b"10.0.0.1", b"10.9.9.9"))
    report = check(pulls, access, chain)
    assert not report.ok
    m = report.mismatch
    assert (m.application, m.position, m.event_id, m.topic) == ("Pulls", victim.id, str(victim.originator_id),
                                                                "domain.pull:Pull.Recorded")
    assert "edited" in m.reason


def test_verify_names_an_edited_admin_event(store, env):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    action = access.recorder.select_notifications(start=1, limit=10)[1]
    edit_state(env, "Access", action.id, action.state.replace(b'"admin"', b'"nobody"'))
    m = check(pulls, access, chain).mismatch
    assert m is not None and (m.application, m.position, m.event_id) == ("Access", action.id,
                                                                        str(action.originator_id))


def test_verify_names_a_deleted_pull(store, env):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    victim = nth_pull(pulls, 3)
    delete_event(env, "Pulls", victim.id)
    m = check(pulls, access, chain).mismatch
    assert m is not None and (m.position, m.event_id, m.topic) == (victim.id, str(victim.originator_id),
                                                                   "domain.pull:Pull.Recorded")
    assert "deleted" in m.reason


def test_verify_reports_a_seal_whose_head_does_not_match(store):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    head = chain.head("Pulls")
    forged = AuditSeal(heads=[{**head.as_dict(), "link": "f" * 64}, chain.head("Access").as_dict()],
                       actor="mallory", at=2_000.0)
    access.save(forged)
    caught_up(runners)
    m = check(pulls, access, chain).mismatch
    assert m is not None and m.application == "Pulls" and m.position == head.position
    assert f"seal {forged.id}" in m.reason and "mallory" in m.reason


def test_the_view_and_the_store_edited_together_are_caught_by_the_seal(store, env):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    seal = AuditSeals(access, chain, ManualClock()).seal("admin")
    victim = nth_pull(pulls, 2)
    edit_state(env, "Pulls", victim.id, victim.state.replace(b"skopeo", b"podman"))
    runners.stop()                     # first: a live runner could write its page back after the clear
    chain.clear()                      # an operator who also rebuilds the chain view over the edited store
    runners = ProjectionRunners(env, ["chain"]).start()
    try:
        runners.wait_caught_up(timeout=20)
        m = check(pulls, access, chain).mismatch
    finally:
        runners.stop()
    assert m is not None and m.application == "Pulls" and f"seal {seal.id}" in m.reason


def test_the_cli_verifies_and_exits_non_zero_naming_the_edited_event(store, env, tmp_path):
    pulls, access, chain, runners = store
    record_history(pulls, access)
    caught_up(runners)
    config = config_for(env, tmp_path)
    ok = run_in_process("audit", "verify", "--config", str(config), env={})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "checked Pulls 12 events, Access 4 events" in ok.stdout and "verified" in ok.stdout
    victim = nth_pull(pulls, 5)
    edit_state(env, "Pulls", victim.id, victim.state.replace(b"hit", b"mis"))
    bad = run_in_process("audit", "verify", "--config", str(config), "--json", env={})
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["mismatch"]["event_id"] == str(victim.originator_id)
    unknown = run_in_process("audit", "verify", "--config", str(config), "--since", "nope", env={})
    assert unknown.returncode == 2 and "no seal 'nope'" in unknown.stderr


def test_seals_through_the_admin_api_and_the_cli_are_recorded_exported_and_listed(tmp_path):
    import httpx

    from infra.settings import AuditSettings, Settings
    from tests.support.inprocess import InProcessServer

    token = "t0ken-for-seals"
    settings = Settings(data_dir=str(tmp_path / "data"), admin_token=token, organizations=(),
                        audit=AuditSettings(seal_file=str(tmp_path / "seals.jsonl"), seal_interval_seconds=1))
    with InProcessServer(settings) as server:
        pulls, access = server.container.pulls, server.container.access
        record_history(pulls, access, n=6)
        refused = httpx.post(f"{server.url}/api/v1/audit/seals")
        assert refused.status_code == 401
        made = httpx.post(f"{server.url}/api/v1/audit/seals", headers={"Authorization": f"Bearer {token}"})
        assert made.status_code == 201, made.text
        seal = made.json()
        assert seal["actor"] == "admin" and seal["heads"][0]["count"] == 6   # settled: every pull recorded before
        cli = run_in_process("audit", "seal", "--url", server.url, "--token", token, "--json", env={})
        assert cli.returncode == 0, cli.stderr
        by_cli = json.loads(cli.stdout)
        listed = run_in_process("audit", "seals", "--url", server.url, "--token", token, "--json", env={})
        ids = [json.loads(line)["seal"] for line in listed.stdout.splitlines()]
        assert ids[:2] == [seal["seal"], by_cli["seal"]] or seal["seal"] in ids and by_cli["seal"] in ids
        # the periodic seal (every second, when the chain moved since the last seal) is recorded by "system"
        import time
        assert not any(s.actor == "system" for s in read_seals(access))   # nothing moved since the CLI's seal
        record_history(pulls, access, n=2, robot="ci2")
        deadline = time.monotonic() + 15
        while not any(s.actor == "system" for s in read_seals(access)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(s.actor == "system" for s in read_seals(access))
    shipped = [json.loads(line)["seal"] for line in (tmp_path / "seals.jsonl").read_text().splitlines()]
    assert seal["seal"] in shipped and by_cli["seal"] in shipped
    config = tmp_path / "entrepot.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    ok = run_in_process("audit", "verify", "--config", str(config), "--since", seal["seal"], env={})
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_a_seal_interval_below_one_second_is_refused(tmp_path):
    from infra.settings import SettingsError, load_settings

    config = tmp_path / "c.toml"
    config.write_text("[audit]\nseal_interval_seconds = 0.01\n")
    with pytest.raises(SettingsError, match=r"\[audit\] seal_interval_seconds must be 0 \(off\) or at least 1"):
        load_settings(str(config))
    config.write_text("[audit]\nretain_days = -1\n")
    with pytest.raises(SettingsError, match=r"\[audit\] retain_days"):
        load_settings(str(config))
