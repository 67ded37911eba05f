"""A whole answer in hand (a manifest, the headers of a HEAD): its two ASGI messages built directly.

Litestar's Response gives the same messages (the headers lower-cased in their order, then
`content-type` and `content-length` unless given), by way of a header multimap, a render step and an
ASGIResponse per request: about a tenth of a warm pull's work on the event loop. `Answer` is a
Response, so the routed handlers may return it too.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.types import Receive, Scope, Send

NO_BODY_STATUSES = frozenset({204, 304})


class Answer(Response[bytes]):
    __slots__ = ("_raw_headers",)

    def __init__(self, body: bytes, *, media_type: str, headers: dict[str, str], status_code: int = 200) -> None:
        if status_code < 200 or status_code in NO_BODY_STATUSES:
            raise ValueError(f"an Answer has a body; status {status_code} has none")
        # What Response.__init__ would set, without its checks: Litestar reads these on its own paths.
        self.content, self.media_type, self.status_code, self.headers = body, media_type, status_code, headers
        self.background, self.cookies, self.encoding, self.response_type_encoders = None, [], "utf-8", {}
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        given = {name for name, _ in raw}
        if b"content-type" not in given:
            content_type = f"{media_type}; charset=utf-8" if media_type.startswith("text/") else media_type
            raw.append((b"content-type", content_type.encode("latin-1")))
        if b"content-length" not in given:
            raw.append((b"content-length", str(len(body)).encode("latin-1")))
        self._raw_headers = raw

    def to_asgi_response(self, app: Any, request: Request, *, headers: dict[str, str] | None = None,
                         cookies: Any = None, background: Any = None, **kwargs: Any) -> Any:
        if headers or cookies or background:   # a route that adds its own: Litestar merges them
            return super().to_asgi_response(app, request, headers=headers, cookies=cookies, background=background,
                                            **kwargs)
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self._raw_headers})
        await send({"type": "http.response.body", "body": self.content, "more_body": False})
