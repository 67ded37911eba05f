"""`entrepot serve` as a process: what it says when it cannot start, and the deployment probes it answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from litestar.testing import TestClient

from infra.settings import Settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.unit.test_deploy_files import probe_paths

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_serve_with_a_bad_config_prints_one_line_and_exits_non_zero(tmp_path):
    path = tmp_path / "entrepot.toml"
    path.write_text('[server]\nport = "abc"\n')
    done = subprocess.run([sys.executable, "-m", "interfaces.cli", "serve", "--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f'entrepot: {path}: [server] port: expected an integer, got "abc"']
    assert "Traceback" not in done.stderr + done.stdout


def test_the_probe_paths_answer_without_credentials(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), organizations=())
    with TestClient(create_app(bootstrap(settings))) as client:
        for path in set(probe_paths().values()):
            response = client.get(path)   # kubelet sends no Authorization header
            assert response.status_code == 200, (path, response.text)
