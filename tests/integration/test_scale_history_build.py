"""bench.scale_history's pipelined builder: every event once, in order, through the applications, and resumable."""

from __future__ import annotations

import sqlite3
from collections import Counter

from bench.scale_history import Progress, Shape, image, registry_changes, first_uses, write_history
from domain.cache import CachedBlob
from infra.persistence import embedded_env

SHAPE = Shape(orgs=3, images=120, pulls=2_500, clients=20)


def topics(path, table: str = "stored_events") -> Counter:
    with sqlite3.connect(path) as conn:
        return Counter(topic.rsplit(".", 1)[-1] for (topic,) in conn.execute(f"SELECT topic FROM {table}"))


def test_batches_of_any_size_cache_each_orgs_blob_once_where_a_sequential_pass_would():
    first = first_uses(SHAPE)
    cached_at = lambda i: float(i)   # noqa: E731
    expected = {(image(SHAPE, i).org, digest) for i in range(SHAPE.images) for digest, _ in image(SHAPE, i).blobs}
    for size in (1, 7, 50, SHAPE.images):
        blobs = [(c.org, c.digest) for start in range(0, SHAPE.images, size)
                 for c in registry_changes(SHAPE, start, min(start + size, SHAPE.images), cached_at, first)
                 if isinstance(c, CachedBlob)]
        assert len(blobs) == len(set(blobs)) and set(blobs) == expected


def test_the_history_is_written_whole_and_a_build_stopped_between_commit_and_progress_resumes(tmp_path):
    env = embedded_env(tmp_path)
    progress = Progress(tmp_path / "progress.json", SHAPE)
    figures = write_history(env, SHAPE, progress, print, image_batch=50, pull_batch=1_000, workers=2)
    assert figures["pulls"]["events"] == SHAPE.pulls
    registry, pulls = topics(tmp_path / "registry.db"), topics(tmp_path / "pulls.db")
    assert pulls == {"Recorded": SHAPE.pulls}
    assert registry["Registered"] == SHAPE.orgs
    with sqlite3.connect(tmp_path / "pulls.db") as conn:   # in time order, as the server writes them
        ats = [row[0] for row in conn.execute("SELECT json_extract(state, '$.at') FROM stored_events ORDER BY rowid")]
    assert ats == sorted(ats)
    # Stopped after the last image batch's commit but before progress.json said so: written once only.
    progress.save(images=100)
    with sqlite3.connect(tmp_path / "pulls.db") as conn:   # and the last pull batch is to be written again
        conn.execute("DELETE FROM stored_events WHERE rowid > 2000")
    write_history(env, SHAPE, Progress(tmp_path / "progress.json", SHAPE), print, image_batch=50,
                  pull_batch=1_000, workers=2)
    assert topics(tmp_path / "registry.db") == registry
    assert topics(tmp_path / "pulls.db") == {"Recorded": SHAPE.pulls}
