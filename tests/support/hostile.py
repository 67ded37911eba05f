"""Helpers for hostile-input tests: raw HTTP requests sent byte for byte, and a snapshot of what is stored."""

from __future__ import annotations

import json
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RawAnswer:
    status: int
    headers: dict[str, str]   # lower-case names; the last value of a repeated header
    body: bytes

    def error_code(self) -> str:
        try:
            return json.loads(self.body)["errors"][0]["code"]
        except (ValueError, KeyError, IndexError, TypeError):
            return ""


def raw_request(host: str, port: int, method: str, target: str, headers: dict[str, str] | None = None,
                timeout: float = 15.0) -> RawAnswer:
    """Send `method target` exactly as given (no client normalises `//` or `%2F`), read one answer."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
             *(f"{name}: {value}" for name, value in (headers or {}).items()), "", ""]
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    if answer_headers.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
    return RawAnswer(int(status_line.split()[1]), answer_headers, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


@dataclass(frozen=True)
class StoredState:
    """What an embedded `entrepot serve` has stored: event positions per database, and blob files."""

    events: dict[str, tuple[int, int]]   # database file -> (event count, highest notification id)
    files: frozenset[str]                # every file under data_dir/storage, spool included


def stored_state(data_dir: Path) -> StoredState:
    events = {}
    for path in sorted(data_dir.glob("*.db")):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "stored_events" in tables:
                events[path.name] = db.execute(
                    "SELECT count(*), coalesce(max(rowid), 0) FROM stored_events").fetchone()
    storage = data_dir / "storage"
    files = frozenset(str(p.relative_to(storage)) for p in storage.rglob("*") if p.is_file()) if storage.exists() \
        else frozenset()
    return StoredState(events, files)
