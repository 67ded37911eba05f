"""A process killed between writing an archive segment and renaming it leaves a `.tmp-*` file: the next
segment written in that directory removes it once it is old enough to be nobody's write in progress."""

from __future__ import annotations

import os
import time

from infra.storage.archive import LEFTOVER_SECONDS, FilesystemSegments


def test_an_old_temporary_segment_is_removed_by_the_next_put_and_a_young_one_is_left(tmp_path):
    store = FilesystemSegments(str(tmp_path))
    store.put("Pulls/000001.jsonl.gz", b"first")
    directory = tmp_path / "Pulls"
    old, young = directory / ".tmp-killed", directory / ".tmp-in-progress"
    old.write_bytes(b"half a segment")
    young.write_bytes(b"being written")
    long_ago = time.time() - LEFTOVER_SECONDS - 60
    os.utime(old, (long_ago, long_ago))

    store.put("Pulls/000002.jsonl.gz", b"second")

    assert not old.exists()
    assert young.exists()
    assert store.get("Pulls/000001.jsonl.gz") == b"first" and store.get("Pulls/000002.jsonl.gz") == b"second"
    assert sorted(p.name for p in directory.iterdir()) == [".tmp-in-progress", "000001.jsonl.gz", "000002.jsonl.gz"]
