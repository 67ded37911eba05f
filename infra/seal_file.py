"""`[audit] seal_file`: each audit seal appended as one JSON line, for the operator to ship elsewhere."""

from __future__ import annotations

import json
import os
import threading


class SealFile:
    """Appends and fsyncs: a seal the API answered is on disk, whatever happens to the process next."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._lock = threading.Lock()

    def __call__(self, seal: dict) -> None:
        line = (json.dumps(seal, sort_keys=True, separators=(",", ":")) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
