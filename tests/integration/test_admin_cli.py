"""`entrepot org ...` and `entrepot audit ...` against a running `entrepot serve`: run in the test process,
and as real commands where the exit status is what is tested."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.cli import run_in_process
from tests.support.images import build_image, push_image
from tests.support.processes import concurrently
from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.integration
TOKEN = "cli-test-token"
ALPINE = build_image("cli/alpine", layers=1, layer_size=10_000)
ACCEPT = {"Accept": ALPINE.media_type}


@pytest.fixture(scope="module")
def upstream(module_upstream_registry_factory):
    registry = module_upstream_registry_factory()
    push_image(registry.url, "library/alpine", "3.19", ALPINE)
    return registry


@pytest.fixture(scope="module")
def server(upstream, module_entrepot_server_factory):
    # The orgs these tests create through the CLI use the loopback registry: the operator allows loopback.
    return module_entrepot_server_factory([{"name": "hub", "upstream": upstream.url}],
                                          env={"ENTREPOT_ADMIN_TOKEN": TOKEN},
                                          sections={"security": {"allowed_upstream_networks": ["127.0.0.0/8"]}})


def entrepot(server, *args: str, token: str | None = TOKEN, stdin: str | None = None) -> subprocess.CompletedProcess:
    """The command run in this process (see run_in_process); entrepot_process runs it as a real command."""
    env = {"ENTREPOT_URL": server.url, **({"ENTREPOT_ADMIN_TOKEN": token} if token is not None else {})}
    return run_in_process(*args, env=env, stdin=stdin)


def entrepot_process(server, *args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENTREPOT_")}
    env.update({"ENTREPOT_URL": server.url, "PYTHONUNBUFFERED": "1"})
    if token is not None:
        env["ENTREPOT_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "interfaces.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def test_org_commands_create_list_show_update_and_delete_an_organization(server, upstream):
    created = ok(entrepot(server, "org", "create", "mirror", "--upstream", upstream.url, "--staleness-seconds", "60",
                          "--username", "bob", "--password-stdin", stdin="s3cret\n"))
    assert "created organization mirror" in created and "bob (password set)" in created

    listed = ok(entrepot(server, "org", "list"))
    assert listed.splitlines()[0].split()[:3] == ["NAME", "UPSTREAM", "NAMESPACE"]
    assert [line.split()[0] for line in listed.splitlines()[1:]] == ["hub", "mirror"]
    assert {org["name"] for org in json.loads(ok(entrepot(server, "org", "list", "--json")))} == {"hub", "mirror"}

    ok(entrepot(server, "org", "update", "mirror", "--namespace", "library", "--default"))
    httpx.get(f"{server.url}/v2/alpine/manifests/3.19", headers=ACCEPT, timeout=10).raise_for_status()  # root path

    # The tags view shows the pull a moment later (projections trail the event store).
    deadline = time.monotonic() + 15
    while "1 in 1 repositories" not in (shown := ok(entrepot(server, "org", "show", "mirror"))) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    settings = {line[:24].strip(): line[24:] for line in shown.splitlines()[:14]}
    assert settings["namespace"] == "library" and settings["default"] == "yes"
    assert settings["staleness seconds"] == "60s" and "s3cret" not in shown
    assert "1 in 1 repositories" in shown and ALPINE.manifest_digest[:19] not in shown   # a summary only
    listed = ok(entrepot(server, "org", "show", "mirror", "--tags"))
    assert "alpine" in listed and ALPINE.manifest_digest[:19] in listed
    details = json.loads(ok(entrepot(server, "org", "show", "mirror", "--tags", "--blobs", "--json")))
    assert details["tags"][0]["digest"] == ALPINE.manifest_digest and details["tag_count"] == 1
    assert {blob["digest"] for blob in details["blobs"]} <= set(ALPINE.blobs)

    refused = entrepot(server, "org", "delete", "mirror")   # it caches an image: deleted only with it
    assert refused.returncode == 1 and "`entrepot org delete mirror --flush`" in refused.stderr
    assert "mirror" in ok(entrepot(server, "org", "list"))
    assert "deleted organization mirror and flushed its cache" in ok(entrepot(server, "org", "delete", "mirror",
                                                                              "--flush"))
    assert "mirror" not in ok(entrepot(server, "org", "list"))
    # The flush that went with it is in the eviction log, by the admin (the API's /audit/evictions)
    log = [json.loads(line) for line in ok(entrepot(server, "audit", "evictions", "--org", "mirror",
                                                    "--kind", "flush", "--json")).splitlines()]
    assert [(e["org"], e["kind"], e["actor"], e["dry_run"], e["bytes"] > 0) for e in log] == [
        ("mirror", "flush", "admin", False, True)]
    table = ok(entrepot(server, "audit", "evictions", "--org", "mirror"))
    assert table.splitlines()[0].split()[:4] == ["AT", "KIND", "ORG", "GEN"] and "flush" in table


def test_org_commands_report_the_servers_refusal_and_exit_non_zero(server, upstream):
    # Two real commands (a refusal by the server, one by the CLI itself): the exit status is what a
    # shell sees. They change nothing, so they run at once.
    conflict, no_token = concurrently(
        lambda: entrepot_process(server, "org", "create", "hub", "--upstream", upstream.url),
        lambda: entrepot_process(server, "org", "list", token=""))
    invalid = entrepot(server, "org", "create", "bad", "--upstream", upstream.url, "--staleness-seconds", "-1")
    missing = entrepot(server, "org", "show", "nosuch")
    wrong_token = entrepot(server, "org", "list", token="wrong")

    assert conflict.returncode == 1 and "'hub' already exists" in conflict.stderr
    assert invalid.returncode == 1 and "staleness_seconds:" in invalid.stderr
    assert missing.returncode == 1 and "no cache organization named 'nosuch'" in missing.stderr
    assert no_token.returncode == 1 and "ENTREPOT_ADMIN_TOKEN" in no_token.stderr
    assert wrong_token.returncode == 1 and "admin token" in wrong_token.stderr
    assert "bad" not in ok(entrepot(server, "org", "list"))


@pytest.fixture(scope="module")
def pulls(server):
    """Five manifest GETs: three by containerd, two by podman."""
    for user_agent in ["containerd/1.6.20"] * 3 + ["podman/4.3.1"] * 2:
        response = httpx.get(f"{server.url}/v2/hub/library/alpine/manifests/3.19",
                             headers={**ACCEPT, "User-Agent": user_agent}, timeout=10)
        response.raise_for_status()
    deadline = time.monotonic() + 10
    def audited() -> int:
        return len(httpx.get(f"{server.url}/api/v1/audit", params={"org": "hub"},
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()["items"])

    while audited() < 5:
        assert time.monotonic() < deadline, "the audit log did not catch up"
        time.sleep(0.1)
    return server


def test_audit_follows_cursors_to_the_end_and_reports_progress_on_stderr(pulls):
    result = entrepot(pulls, "audit", "--format", "jsonl", "--page-size", "2", "--org", "hub")

    rows = [json.loads(line) for line in ok(result).splitlines()]
    assert len(rows) == 5 and [row["id"] for row in rows] == sorted(row["id"] for row in rows)
    assert "rows so far" in result.stderr


def test_audit_filters_and_formats_as_a_table_json_lines_and_csv(pulls):
    table = ok(entrepot(pulls, "audit", "--user-agent", "podman"))
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["ID", "TIME", "ORG"]
    assert len(lines) == 3 and all("podman/4.3.1" in line for line in lines[1:])

    misses = ok(entrepot(pulls, "audit", "--org", "hub", "--result", "miss", "--json")).splitlines()
    assert [json.loads(line)["result"] for line in misses] == ["miss"]

    exported = list(csv.DictReader(io.StringIO(ok(entrepot(pulls, "audit", "--format", "csv", "--since", "1h",
                                                           "--user-agent", "containerd")))))
    assert len(exported) == 3 and {row["user_agent"] for row in exported} == {"containerd/1.6.20"}

    none = entrepot(pulls, "audit", "--since", "2999-01-01")
    assert ok(none).strip() == "" and "no pulls match" in none.stderr
    bad = entrepot(pulls, "audit", "--result", "maybe")
    assert bad.returncode == 1 and "result:" in bad.stderr


def test_a_generated_admin_token_is_printed_once_at_first_start_and_kept(upstream, entrepot_server_factory):
    server = entrepot_server_factory([{"name": "hub", "upstream": upstream.url}],
                                     env={"ENTREPOT_ADMIN_TOKEN": ""})
    server.stop()
    server.start()
    token_file = server.data_dir / "admin.token"
    token = token_file.read_text().strip()

    assert server.log_path.read_text().count(f"Admin API token (generated, kept in {server.data_dir}") == 1
    assert token in server.log_path.read_text()
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert "hub" in ok(entrepot(server, "org", "list", token=token))
