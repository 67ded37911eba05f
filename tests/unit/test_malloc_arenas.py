"""`entrepot serve` lets its threads share two malloc arenas (interfaces/serving.py share_malloc_arenas):
each arena keeps freed heap for the blob path, and an arena per thread made the server's memory grow
with every cold pull. Counted in a child process: each arena but the main one is a heap mapping aligned
to glibc's 64 MiB heap size."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.server import REPO_ROOT

PROBE = """
import sys, threading
if sys.argv[1] == "share":
    from interfaces.serving import share_malloc_arenas
    print(share_malloc_arenas())
else:
    print(None)
held, barrier = [], threading.Barrier(8)
def work():
    barrier.wait()                      # eight threads allocating at once
    for _ in range(50):
        held.append(bytes(100_000))     # below the mmap threshold: from an arena
threads = [threading.Thread(target=work) for _ in range(8)]
[t.start() for t in threads]
[t.join() for t in threads]
HEAP = 64 * 2**20
arenas = 0
for line in open("/proc/self/maps"):
    fields = line.split()
    low = int(fields[0].split("-")[0], 16)
    arenas += low % HEAP == 0 and fields[1] == "rw-p" and len(fields) == 5
print(arenas)
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=REPO_ROOT, env=environment, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas, read from /proc")
def test_the_threads_share_two_arenas_instead_of_one_each():
    assert arenas("plain")[1] >= 4          # glibc's default: an arena per thread, up to 8 per core
    assert arenas("share") == ("True", 1)   # the main arena and one more


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas, read from /proc")
def test_an_operators_malloc_arena_max_is_left_alone():
    said, count = arenas("share", MALLOC_ARENA_MAX="4")
    assert said == "False" and 1 <= count <= 3
