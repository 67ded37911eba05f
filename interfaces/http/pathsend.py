"""A response that lets the ASGI server send a file itself (`http.response.pathsend`), when it offers to.

granian offers the extension: it reads the file in its Rust runtime, so the bytes never pass
through Python or the event loop. uvicorn does not; callers check `offers_pathsend` first and
stream chunks otherwise. pathsend has no offset or length, so it serves whole files only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from litestar import Request, Response
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Send

PATHSEND = "http.response.pathsend"


def offers_pathsend(scope: Mapping[str, Any]) -> bool:
    return PATHSEND in (scope.get("extensions") or {})


class _ASGIPathSendResponse(ASGIResponse):
    __slots__ = ("path",)

    def __init__(self, *, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    async def send_body(self, send: Send, receive: Receive) -> None:
        await send({"type": PATHSEND, "path": self.path})  # type: ignore[typeddict-item]


class PathSend(Response[None]):
    """Send the file at `path` whole. `headers` must carry its Content-Length: Litestar would
    otherwise announce a length of 0, the size of the (empty) Python body."""

    __slots__ = ("path",)

    def __init__(self, path: str, *, status_code: int = 200, media_type: str = "application/octet-stream",
                 headers: dict[str, str]) -> None:
        if not any(name.lower() == "content-length" for name in headers):
            raise ValueError("PathSend needs an explicit Content-Length header")
        super().__init__(None, status_code=status_code, media_type=media_type, headers=headers)
        self.path = path

    def to_asgi_response(self, app: Any, request: Request, *, background: Any = None,
                         cookies: Iterable[Any] | None = None, encoded_headers: Any = None,
                         headers: dict[str, str] | None = None, is_head_response: bool = False,
                         media_type: str | None = None, status_code: int | None = None,
                         type_encoders: Any = None) -> ASGIResponse:
        # Same merging as Litestar's own responses (theirs win over the handler's defaults).
        headers = {**headers, **self.headers} if headers is not None else self.headers
        cookies = self.cookies if cookies is None else [*self.cookies, *cookies]
        return _ASGIPathSendResponse(
            path=self.path, background=self.background or background, cookies=cookies, headers=headers,
            is_head_response=is_head_response, media_type=self.media_type or media_type,
            status_code=self.status_code or status_code)
