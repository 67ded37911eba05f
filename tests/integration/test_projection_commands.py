"""`entrepot projections status` and `rebuild` on the embedded default, next to a real `entrepot serve`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from projections.catalog import PROJECTION_NAMES
from tests.support.server import REPO_ROOT

pytestmark = pytest.mark.integration


def states(result: subprocess.CompletedProcess) -> set[str]:
    assert result.returncode == 0, result.stderr
    return {row["state"] for row in json.loads(result.stdout)}


def test_status_shows_the_projections_a_running_server_runs_and_stopped_once_it_ends(entrepot_server_factory):
    server = entrepot_server_factory([])
    assert states(server.cli("projections", "status", "--json")) == {"running"}
    table = server.cli("projections", "status").stdout.splitlines()
    assert table[0].split()[-1] == "STATE" and {line.split()[-1] for line in table[1:]} == {"running"}
    server.stop()
    assert states(server.cli("projections", "status", "--json")) == {"stopped"}


def test_rebuild_is_refused_while_a_server_holds_the_data_directory_and_runs_once_it_is_stopped(
        entrepot_server_factory):
    server = entrepot_server_factory([{"name": "local", "upstream": "http://127.0.0.1:1"}])
    refused = server.cli("projections", "rebuild", "orgs")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == f"entrepot: a server is running on {server.data_dir}: stop it first (the rebuild " \
                             "works in place on SQLite)\n"
    server.stop()
    rebuilt = server.cli("projections", "rebuild", "orgs")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert rebuilt.stdout.startswith("rebuilt orgs: ") and " 0 events" not in rebuilt.stdout
    every = server.cli("projections", "rebuild", "all")   # one pass over each log for every view
    assert every.returncode == 0, every.stderr
    assert [line.split(":")[0] for line in every.stdout.splitlines()] == [f"rebuilt {name}" for name in PROJECTION_NAMES]
    unknown = server.cli("projections", "rebuild", "orgs", "nope")
    assert unknown.returncode == 2 and "unknown projection 'nope'" in unknown.stderr
    server.start()   # the rebuild let go of the data directory
    assert states(server.cli("projections", "status", "--json")) == {"running"}


@pytest.mark.parametrize("command", [["status"], ["rebuild", "tags"]])
def test_status_and_rebuild_refuse_a_data_directory_that_does_not_exist(command, tmp_path):
    missing = tmp_path / "entrepot-data"
    result = subprocess.run([sys.executable, "-m", "interfaces.cli", "projections", *command, "--data-dir",
                             str(missing)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"entrepot: no data directory at {missing} (pass --data-dir or --config, or run " \
                            "`entrepot serve` there first)\n"
    assert not missing.exists()


def test_status_run_from_another_directory_does_not_create_entrepot_data_there(tmp_path):
    result = subprocess.run([sys.executable, "-m", "interfaces.cli", "projections", "status"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 1 and "no data directory at" in result.stderr
    assert list(tmp_path.iterdir()) == []
