"""The requests a running `entrepot serve --access-log` answered, read from its access log."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import unquote

# ... entrepot.access: 127.0.0.1:51234 - "GET /v2/hub/x/manifests/1.0?ns=docker.io HTTP/1.1" 200 1638 0.004s
ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[\d.]+" (?P<status>\d{3})\b')


class AccessLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._mark = 0

    def _all(self) -> list[tuple[str, str, int]]:
        text = self.path.read_text(errors="replace") if self.path.exists() else ""
        return [(m["method"], unquote(m["target"]), int(m["status"])) for m in ACCESS_LINE.finditer(text)]

    def mark(self, settle: float = 0.3) -> None:
        """Later requests() only return requests answered after this call (and after the lines of
        requests answered before it are written: a line follows its reply)."""
        self._mark = self._settled(settle)

    def requests(self, settle: float = 0.3) -> list[tuple[str, str, int]]:
        """(method, path with query, status) since mark(); waits until the log stops growing (lines follow replies)."""
        self._settled(settle)
        return self._all()[self._mark:]

    def _settled(self, settle: float) -> int:
        """The number of lines once the log has stopped growing for `settle` seconds (5 s at most)."""
        seen, deadline = -1, time.monotonic() + 5
        while time.monotonic() < deadline:
            current = len(self._all())
            if current == seen:
                break
            seen = current
            time.sleep(settle)
        return seen
