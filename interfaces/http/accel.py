"""Warm blobs handed to an nginx in front (`X-Accel-Redirect`): Entrepôt answers, nginx sends the file.

Entrepôt still does everything but the copy: routing, client auth, governance, the blob's org check,
metrics and analytics (the bytes are counted as handed over, like a path-send), and it answers every
error itself. nginx then serves the published file from an `internal` location with `sendfile`, the
client's `Range` included (infra/deploy/nginx/nginx.conf).

Eviction-safety: the reaper deletes a blob only after no image has referenced it for
`[storage] delete_grace_seconds`, and nginx opens the file within a millisecond of our answer (the
internal redirect happens when it reads our headers); an open file outlives its deletion, so a
send never breaks. Should the file vanish in that millisecond anyway, nginx's `error_page 404`
asks us again with `X-Entrepot-Accel: off`, and we stream the blob (fetching it again if needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from litestar import Request

OPT_OUT = b"x-entrepot-accel"   # "off": nginx's fallback after the file vanished; we send the bytes


@dataclass(frozen=True)
class AccelRedirect:
    location: str     # the nginx internal location, "/_entrepot/blobs/"
    root: str         # the directory it aliases: the filesystem store's blobs directory

    def uri(self, path: str) -> str | None:
        """The internal URI of a published blob file; None for a file outside the aliased directory."""
        relative = os.path.relpath(path, self.root)
        if relative.startswith("..") or os.path.isabs(relative):
            return None
        return self.location + relative.replace(os.sep, "/")


def accel_uri(accel: AccelRedirect | None, request: Request, path: str | None) -> str | None:
    """Where nginx should send this GET's bytes from, or None when we send them ourselves."""
    if accel is None or path is None or request.method != "GET":
        return None
    if any(key.lower() == OPT_OUT and value == b"off" for key, value in request.scope["headers"]):
        return None
    return accel.uri(path)
