"""An offline SQLite rebuild with a larger page cache (rebuild_many(cache_kib=...)) writes the same views."""

from __future__ import annotations

import pytest

from application.pulls import Pulls
from domain.pull import Pull
from infra.persistence import embedded_env
from infra.projection_runtime.opening import open_view
from infra.projection_runtime.rebuild import rebuild_many
from tests.support.views import view_dumps

pytestmark = pytest.mark.integration
VIEWS = ("audit", "analytics", "counters")


def _dumps(env: dict) -> dict:
    return view_dumps(env, VIEWS)


def test_a_rebuild_with_a_larger_cache_writes_the_same_rows_and_sets_the_cache(tmp_path):
    env = embedded_env(tmp_path / "store")
    pulls = Pulls(env=env)
    try:
        pulls.write([Pull.recorded("hub", f"library/image{n % 7}", "latest", "sha256:" + "1" * 64, "hit",
                                   f"10.0.0.{n % 5}", "containerd/2.0", 100.0 + n * 13) for n in range(300)])
    finally:
        pulls.close()
    rebuild_many(VIEWS, env, 50)
    default = _dumps(env)
    rebuild_many(VIEWS, env, 50, cache_kib=65536)
    assert _dumps(env) == default and default["audit"]["audit"]
    view = open_view("audit", env)
    try:
        view.cache_kib = 65536
        with view._writing() as c:
            c.execute("PRAGMA cache_size")
            assert c.fetchone()[0] == -65536
    finally:
        view.close()
