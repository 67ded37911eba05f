"""Answer: the ASGI messages Litestar's Response would send for the same body, media type and headers."""

from __future__ import annotations

import asyncio

import pytest
from litestar import Request, Response

from interfaces.http.answer import Answer

MANIFEST = b'{"schemaVersion": 2}'
SCOPE = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "query_string": b"", "headers": [],
         "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 5000), "client": ("127.0.0.1", 1),
         "root_path": "", "state": {}, "path_params": {}}


def sent(response: Response, **route) -> list[dict]:
    """What a response sends once Litestar's route has turned it into an ASGI response (with the route's
    own defaults in `route`, as its response handler passes them)."""
    messages: list[dict] = []

    async def send(message: dict) -> None:
        messages.append(message)

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def run() -> None:
        request = Request(dict(SCOPE))
        await response.to_asgi_response(app=None, request=request, **route)(dict(SCOPE), receive, send)
    asyncio.run(run())
    return messages


@pytest.mark.parametrize("body, media_type, headers, status", [
    (MANIFEST, "application/vnd.docker.distribution.manifest.v2+json",
     {"Docker-Distribution-API-Version": "registry/2.0", "Docker-Content-Digest": "sha256:ab", "X-Cache": "HIT",
      "Content-Length": str(len(MANIFEST))}, 200),
    (b"", "application/vnd.oci.image.index.v1+json", {"Content-Length": "1234", "X-Cache": "HIT"}, 200),   # a HEAD
    (b"", "application/octet-stream", {"Accept-Ranges": "bytes", "Content-Range": "bytes 0-9/100",
                                      "Content-Length": "10"}, 206),
    (b"", "application/octet-stream", {"X-Accel-Redirect": "/_blobs/ab"}, 200),   # no length given: 0
    (b"plain words", "text/plain", {"X-Extra": "1"}, 200),                          # a text type gets its charset
    (MANIFEST, "application/json", {"Content-Type": "application/x-own", "OCI-Namespace": "docker.io"}, 200),
])
def test_an_answer_sends_what_litestars_response_sends(body, media_type, headers, status):
    routed = {"headers": {}, "cookies": [], "background": None, "media_type": "application/json", "status_code": 200}
    expected = sent(Response(body, media_type=media_type, headers=dict(headers), status_code=status), **routed)
    assert sent(Answer(body, media_type=media_type, headers=dict(headers), status_code=status), **routed) == expected
    assert sent(Answer(body, media_type=media_type, headers=dict(headers), status_code=status)) == expected


def test_headers_a_route_adds_are_merged_as_litestar_merges_them():
    answer = Answer(MANIFEST, media_type="application/json", headers={"X-Cache": "HIT"})
    expected = sent(Response(MANIFEST, media_type="application/json", headers={"X-Cache": "HIT"}),
                    headers={"X-Route": "yes", "X-Cache": "route"})
    assert sent(answer, headers={"X-Route": "yes", "X-Cache": "route"}) == expected


def test_a_status_without_a_body_is_no_answer():
    with pytest.raises(ValueError):
        Answer(b"", media_type="application/json", headers={}, status_code=304)
