"""`entrepot robot ...`, `entrepot org-admin create` and `entrepot admin-log`, run as real commands against `entrepot serve`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import httpx
import pytest

from tests.support.images import build_image, push_image
from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.integration
TOKEN = "access-cli-test-token"
IMAGE = build_image("cli/access", layers=1, layer_size=10_000)
ACCEPT = {"Accept": IMAGE.media_type}


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", IMAGE)
    return registry


@pytest.fixture(scope="module")
def server(upstream, module_entrepot_server_factory):
    # The orgs are made through the API, so an org admin may change its org (one of the config file it may
    # not); on loopback, which the operator allows for such orgs.
    server = module_entrepot_server_factory([], env={"ENTREPOT_ADMIN_TOKEN": TOKEN},
                                            sections={"security": {"allowed_upstream_networks": ["127.0.0.0/8"]}})
    for org in ({"name": "private", "upstream": upstream.url, "anonymous_pull": False},
                {"name": "open", "upstream": upstream.url}):
        created = httpx.post(f"{server.url}/api/v1/organizations", json=org,
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert created.status_code == 201, created.text
    return server


def entrepot(server, *args: str, token: str = TOKEN, user: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENTREPOT_")}
    env.update({"ENTREPOT_URL": server.url, "PYTHONUNBUFFERED": "1", "ENTREPOT_ADMIN_TOKEN": token})
    if user:
        env["ENTREPOT_ADMIN_USER"] = user
    return subprocess.run([sys.executable, "-m", "interfaces.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def pull(server, username: str, token: str) -> int:
    auth = base64.b64encode(f"{username}:{token}".encode()).decode()
    return httpx.get(f"{server.url}/v2/private/library/alpine/manifests/3.19",
                     headers={**ACCEPT, "Authorization": f"Basic {auth}"}).status_code


def test_robot_commands_create_list_rotate_disable_and_delete(server):
    token = ok(entrepot(server, "robot", "create", "private", "ci", "--repository", "library/*")).strip()
    assert pull(server, "private+ci", token) == 200
    listed = ok(entrepot(server, "robot", "list", "private"))
    assert listed.splitlines()[0].split() == ["USERNAME", "ROLE", "REPOSITORIES", "STATE"]
    assert listed.splitlines()[1].split() == ["private+ci", "robot", "library/*", "active"]

    rotated = json.loads(ok(entrepot(server, "robot", "rotate", "private", "ci", "--json")))
    assert rotated["username"] == "private+ci" and rotated["token"] != token
    assert pull(server, "private+ci", token) == 401
    assert pull(server, "private+ci", rotated["token"]) == 200
    assert "disabled" in ok(entrepot(server, "robot", "disable", "private", "ci"))
    assert pull(server, "private+ci", rotated["token"]) == 401
    ok(entrepot(server, "robot", "enable", "private", "ci"))
    changed = json.loads(ok(entrepot(server, "robot", "repositories", "private", "ci", "--all-cached", "--json")))
    assert changed["repositories"] == ["library/alpine"]
    assert "deleted robot private+ci" in ok(entrepot(server, "robot", "delete", "private", "ci"))
    assert "no robots" in ok(entrepot(server, "robot", "list", "private"))

    refused = entrepot(server, "robot", "create", "private", "Bad Name")
    assert refused.returncode == 1 and "name" in refused.stderr


def test_an_org_admin_uses_the_cli_for_its_org_and_the_admin_log_names_every_actor(server):
    created = json.loads(ok(entrepot(server, "org-admin", "create", "private", "lead", "--json")))
    as_lead = {"user": created["username"], "token": created["token"]}
    ok(entrepot(server, "robot", "create", "private", "builder", "--repository", "*", **as_lead))
    ok(entrepot(server, "org", "update", "private", "--staleness-seconds", "120", **as_lead))
    refused = entrepot(server, "org", "list", **as_lead)
    assert refused.returncode == 1 and "global admin" in refused.stderr
    log = [json.loads(line) for line in ok(entrepot(server, "admin-log", "--org", "private", "--json")).splitlines()]
    assert [(item["actor"], item["action"]) for item in log][-3:] == [
        ("admin", "admin.create"), ("private+lead", "robot.create"), ("private+lead", "org.update")]
    table = ok(entrepot(server, "admin-log", "--actor", "private+lead", **as_lead))
    assert table.splitlines()[0].split() == ["AT", "ACTOR", "ACTION", "TARGET", "DETAIL"]
    assert len(table.splitlines()) == 3
