"""Warm whole blobs go out by `http.response.pathsend` when the server offers it; everything else streams."""

from __future__ import annotations

import asyncio

import pytest
from litestar import Litestar, Request, get
from litestar.response import Stream

from application.blobs import BlobAnswer
from domain.pull import PullResult
from interfaces.http.oci import Target, blob
from interfaces.http.pathsend import PATHSEND, PathSend, offers_pathsend
from tests.unit.fakes import FakeMetrics

DIGEST = "sha256:" + "ab" * 32
DATA = b"0123456789" * 100


def http_scope(method: str = "GET", headers: dict[str, str] | None = None, pathsend: bool = True) -> dict:
    scope = {"type": "http", "method": method, "path": "/", "raw_path": b"/", "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 5000),
             "client": ("127.0.0.1", 40000), "root_path": "", "state": {}, "path_params": {}}
    if pathsend:
        scope["extensions"] = {PATHSEND: {}}
    return scope


class OneBlob:
    """The part of PullThrough blob() uses: the org lookup and a published blob with a local file."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.blobs = self

    async def org(self, name: str) -> str:
        return name

    async def blob(self, org: str, repository: str, digest) -> BlobAnswer:
        async def read(start: int, end: int | None):
            yield DATA[start:end]
        return BlobAnswer(str(digest), len(DATA), PullResult.HIT, read, self.path)


def answer_to(scope: dict, path: str | None = "/data/blobs/sha256/ab/abab", metrics: FakeMetrics | None = None):
    return asyncio.run(blob(Request(scope), OneBlob(path), Target("hub", "library/x", "blobs", DIGEST),
                            metrics or FakeMetrics()))


def test_a_whole_warm_blob_is_sent_by_path_when_the_server_offers_pathsend():
    metrics = FakeMetrics()
    response = answer_to(http_scope(), metrics=metrics)
    assert metrics.total("bytes_served", "hub", "blob") == len(DATA)  # sent by the server, still counted
    assert isinstance(response, PathSend) and response.path == "/data/blobs/sha256/ab/abab"
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Docker-Content-Digest"] == DIGEST


@pytest.mark.parametrize("scope", [
    http_scope(pathsend=False),                        # uvicorn: no extension
    http_scope(headers={"Range": "bytes=10-19"}),      # pathsend cannot send part of a file
], ids=["not-offered", "range"])
def test_otherwise_the_blob_is_streamed_in_chunks(scope):
    assert isinstance(answer_to(scope), Stream)


def test_a_blob_without_a_local_file_is_streamed():
    assert isinstance(answer_to(http_scope(), path=None), Stream)  # e.g. S3 storage without redirects


def test_offers_pathsend_reads_the_scope_extensions():
    assert offers_pathsend(http_scope()) and not offers_pathsend(http_scope(pathsend=False))
    assert not offers_pathsend({"type": "http", "extensions": None})


def test_pathsend_needs_an_explicit_length():
    with pytest.raises(ValueError):
        PathSend("/some/file", headers={"X-Cache": "HIT"})


def test_the_asgi_messages_are_the_headers_then_the_path(tmp_path):
    file = tmp_path / "blob"
    file.write_bytes(DATA)

    @get("/", sync_to_thread=False)
    def handler() -> PathSend:
        return PathSend(str(file), headers={"Content-Length": str(len(DATA)), "X-Cache": "HIT"})

    app = Litestar([handler])
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(http_scope(), receive, send))
    start, body = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-length"] == str(len(DATA)).encode()  # not Litestar's 0 for an empty body
    assert headers[b"content-type"] == b"application/octet-stream"
    assert body == {"type": PATHSEND, "path": str(file)}
