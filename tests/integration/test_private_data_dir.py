"""The data directory is private: it holds the audit (client addresses), the credentials key and the admin token."""

from __future__ import annotations

import os
import stat

import pytest
from litestar.testing import TestClient

from infra.settings import Settings
from interfaces.bootstrap import Container
from interfaces.http.app import create_app

pytestmark = pytest.mark.integration


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_embedded_replica_creates_its_data_directory_0700_and_every_file_in_it_0600(tmp_path):
    data = tmp_path / "data"
    old_umask = os.umask(0o022)   # the usual umask, under which SQLite made its files 0644
    try:
        with TestClient(create_app(Container(Settings(data_dir=str(data), organizations=())))) as api:
            assert api.get("/v2/").status_code == 200
            assert api.get("/readyz").status_code == 200
            files = [p for p in data.rglob("*") if p.is_file()]   # while running: SQLite's -wal and -shm exist
            modes = {str(p.relative_to(data)): mode(p) for p in files}
    finally:
        os.umask(old_umask)
    assert mode(data) == 0o700 and mode(data / "views") == 0o700
    assert {"registry.db", "pulls.db", "credentials.db", "views/audit.db", "secret.key", "admin.token"} <= set(modes)
    assert any(name.endswith(("-wal", "-shm")) for name in modes)   # made by SQLite itself
    assert {name: oct(m) for name, m in modes.items() if m != 0o600} == {}

def test_an_existing_data_directory_readable_by_others_is_made_private(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "registry.db").touch(mode=0o644)
    os.chmod(data / "registry.db", 0o644)
    container = Container(Settings(data_dir=str(data), organizations=()))
    try:
        assert (mode(data), mode(data / "registry.db")) == (0o700, 0o600)
    finally:
        for app in (container.records, container.pulls, container.credentials):
            app.close()
