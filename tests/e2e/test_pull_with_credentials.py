"""End to end: skopeo, podman and containerd pull through a protected org with a robot's credentials.

A real `entrepot serve` in front of a real docker-registry that itself wants credentials. The same robot is
refused outside its patterns and with a wrong token; anonymous pulls of the protected org get the 401
challenge; an open org serves anonymous pulls. The last test greps the data directory (SQLite files), a
pg_dump of a PostgreSQL-backed server and the logs for every robot token and upstream password used, and
finds none.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.clients import DirImage, Podman, run, skopeo_copy_command
from tests.support.components import require
from tests.support.containerd import Containerd
from tests.support.images import build_image, push_image
from tests.support.postgres import require_postgres

pytestmark = pytest.mark.e2e
ADMIN = "e2e-auth-admin-token"
UPSTREAM_USER = "mirror-bot"
UPSTREAM_PASSWORD = "upstream-" + secrets.token_urlsafe(18)
ALPINE = build_image("e2e-auth/alpine", layers=2, layer_size=80_000)
TOOL = build_image("e2e-auth/tool", layers=1, layer_size=40_000)
SECRETS: list[str] = [UPSTREAM_PASSWORD]   # every robot token made in this module joins it


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory(auth=(UPSTREAM_USER, UPSTREAM_PASSWORD))
    for repository, image in (("library/alpine", ALPINE), ("library/busybox", ALPINE), ("other/tool", TOOL)):
        push_image(registry.url, repository, "1.0", image, auth=(UPSTREAM_USER, UPSTREAM_PASSWORD))
    return registry


def orgs(upstream) -> list[dict]:
    credentials = {"upstream": upstream.url, "username": UPSTREAM_USER, "password": UPSTREAM_PASSWORD}
    return [{"name": "private", "anonymous_pull": False, **credentials}, {"name": "open", **credentials}]


@pytest.fixture(scope="module")
def server(upstream, module_entrepot_server_factory):
    return module_entrepot_server_factory(orgs(upstream), access_log=True, env={"ENTREPOT_ADMIN_TOKEN": ADMIN})


def create_robot(server, name: str, repositories: list[str]) -> tuple[str, str]:
    response = httpx.post(f"{server.url}/api/v1/organizations/private/robots", json={
        "name": name, "repositories": repositories}, headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 201, response.text
    body = response.json()
    SECRETS.append(body["token"])
    return body["username"], body["token"]


@pytest.fixture(scope="module")
def ci(server) -> tuple[str, str]:
    return create_robot(server, "ci", ["library/*"])


def audit(server, **filters) -> list[dict]:
    response = httpx.get(f"{server.url}/api/v1/audit", params=filters, headers={"Authorization": f"Bearer {ADMIN}"})
    return response.json()["items"]


def skopeo(source: str, destination: Path, *flags: str) -> subprocess.CompletedProcess:
    command = skopeo_copy_command(source, destination)
    command[command.index("copy") + 1:command.index("copy") + 1] = list(flags)
    return subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def podman(tmp_path):
    require("podman")
    with Podman(tmp_path / "podman") as client:
        yield client


def test_skopeo_pulls_a_protected_org_with_src_creds_and_is_refused_otherwise(server, ci, tmp_path):
    require("skopeo")
    username, token = ci
    creds = f"--src-creds={username}:{token}"
    pulled = skopeo(f"docker://{server.host}/private/library/alpine:1.0", tmp_path / "ok", creds)
    assert pulled.returncode == 0, pulled.stderr
    assert DirImage.read(tmp_path / "ok").manifest == ALPINE.manifest_bytes

    outside = skopeo(f"docker://{server.host}/private/other/tool:1.0", tmp_path / "outside", creds)
    assert outside.returncode != 0
    assert "denied" in outside.stderr.lower() or "unauthorized" in outside.stderr.lower(), outside.stderr
    wrong = skopeo(f"docker://{server.host}/private/library/alpine:1.0", tmp_path / "wrong",
                   f"--src-creds={username}:{token[:-3]}xyz")
    assert wrong.returncode != 0
    assert "401" in wrong.stderr or "unauthorized" in wrong.stderr.lower(), wrong.stderr
    anonymous = skopeo(f"docker://{server.host}/private/library/alpine:1.0", tmp_path / "anonymous")
    assert anonymous.returncode != 0
    assert "unauthorized" in anonymous.stderr.lower() and "does not grant pull" in anonymous.stderr
    opened = skopeo(f"docker://{server.host}/open/library/alpine:1.0", tmp_path / "open")
    assert opened.returncode == 0, opened.stderr

    rows = audit(server, org="private", repository="library/alpine", result="miss")
    assert [row["actor"] for row in rows] == [username]
    denied = audit(server, org="private", result="denied")
    assert {(row["repository"], row["actor"]) for row in denied} >= {("other/tool", username),
                                                                      ("library/alpine", username)}
    assert all(token not in row["note"] for row in denied)


def test_anonymous_gets_the_bearer_challenge_of_the_protected_org(server):
    answer = httpx.get(f"{server.url}/v2/private/library/alpine/manifests/1.0")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == (
        f'Bearer realm="{server.url}/v2/token",service="entrepot",scope="repository:private/library/alpine:pull"')


def test_podman_pulls_with_creds_and_after_podman_login(server, ci, podman, tmp_path):
    username, token = ci
    podman("pull", "--quiet", "--tls-verify=false", "--creds", f"{username}:{token}",
           f"{server.host}/private/library/alpine:1.0")
    assert ALPINE.manifest_digest in podman.image_digests(f"{server.host}/private/library/alpine:1.0")

    authfile = tmp_path / "auth.json"
    podman("login", "--tls-verify=false", "--authfile", str(authfile), "--username", username, "--password", token,
           server.host)
    podman("pull", "--quiet", "--tls-verify=false", "--authfile", str(authfile),
           f"{server.host}/private/library/busybox:1.0")
    refused = subprocess.run(podman.command("pull", "--quiet", "--tls-verify=false", "--authfile", str(authfile),
                                            f"{server.host}/private/other/tool:1.0"),
                             env=podman.env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert refused.returncode != 0
    busybox = audit(server, org="private", repository="library/busybox", result="miss")
    assert [row["actor"] for row in busybox] == [username]
    assert "podman" in busybox[0]["user_agent"] or "containers" in busybox[0]["user_agent"]


def test_containerd_pulls_with_ctr_user(server, tmp_path):
    require("containerd", "ctr")
    username, token = create_robot(server, "nodes", ["library/alpine", "other/*"])
    with Containerd() as containerd:
        reference = f"{server.host}/private/other/tool:1.0"
        run(containerd.ctr("--namespace", "auth", "images", "pull", "--plain-http", "--snapshotter", "native",
                           "--user", f"{username}:{token}", reference))
        assert containerd.image_digest(reference, namespace="auth") == TOOL.manifest_digest
        refused = subprocess.run(containerd.ctr("--namespace", "auth", "images", "pull", "--plain-http", "--user",
                                                f"{username}:{token}", f"{server.host}/private/library/busybox:1.0"),
                                 capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert refused.returncode != 0
    # a HEAD by tag (not a pull) brought it in, then the GET by digest: a hit, by the robot
    assert {row["actor"] for row in audit(server, org="private", repository="other/tool")
            if row["result"] != "denied"} == {username}


def test_no_robot_token_or_upstream_password_is_stored_or_logged(server, upstream, ci, module_entrepot_server_factory):
    # The same flows once more against a PostgreSQL-backed server, for its pg_dump.
    require_postgres()
    from tests.support.postgres import ADMIN_URL   # the shared server; a database of our own on it
    import psycopg
    from psycopg import sql
    from urllib.parse import urlsplit
    database = f"entrepot_auth_{secrets.token_hex(4)}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = urlsplit(ADMIN_URL)._replace(path=f"/{database}").geturl()
    try:
        pg_server = module_entrepot_server_factory(orgs(upstream), access_log=True, env={"ENTREPOT_ADMIN_TOKEN": ADMIN},
                                                   sections={"database": {"url": url, "schema": "auth"}},
                                                   startup_timeout=90)
        username, token = create_robot(pg_server, "ci", ["library/*"])
        for headers in ({"Authorization": httpx.BasicAuth(username, token)._auth_header},
                        {"Authorization": httpx.BasicAuth(username, token + "x")._auth_header}):
            httpx.get(f"{pg_server.url}/v2/private/library/alpine/manifests/1.0", headers=headers)
        token_answer = httpx.get(f"{pg_server.url}/v2/token", params={"scope": "repository:private/library/alpine:pull"},
                                 auth=(username, token))
        assert token_answer.status_code == 200
        SECRETS.append(
            httpx.post(f"{pg_server.url}/api/v1/organizations/private/robots/ci/rotate",
                       headers={"Authorization": f"Bearer {ADMIN}"}).json()["token"])
        pg_server.stop()
        dump = subprocess.run(["pg_dump", "--data-only", url], capture_output=True, timeout=120)
        assert dump.returncode == 0, dump.stderr
        # The dump holds the records: topics in text, event state as bytea (hex), so look for both forms.
        assert b"domain.robot:Robot.Created" in dump.stdout and "robot.create".encode().hex().encode() in dump.stdout
        places = {"pg_dump": dump.stdout}
        for each in (server, pg_server):
            places[str(each.log_path)] = each.log_path.read_bytes()
            for path in Path(each.data_dir).rglob("*"):
                if path.is_file():
                    places[str(path)] = path.read_bytes()
        access_db = b"".join(data for name, data in places.items() if Path(name).name.startswith("access.db"))
        assert b"robot.create" in access_db and username.encode() in access_db   # with its -wal file
        assert len(SECRETS) >= 4
        for secret in SECRETS:
            forms = (secret.encode(), secret.encode().hex().encode())
            found = [place for place, data in places.items() if any(form in data for form in forms)]
            assert not found, f"a secret appears in {found}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
