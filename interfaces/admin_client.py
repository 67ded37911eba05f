"""A client of a running server's admin API (/api/v1), as the `entrepot org` and `entrepot audit` commands use it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx

PAGE = 1000   # audit rows per request when following cursors


class AdminApiError(Exception):
    """The server refused the request (or could not be reached); `fields` names what was wrong."""

    def __init__(self, message: str, status: int | None = None, fields: dict | None = None,
                 error: dict | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.fields = message, status, fields or {}
        self.error = error or {}   # the whole JSON error, e.g. a history 404's previous and next changes


class AdminClient:
    """`token` alone: the global admin token (Bearer). With `user` (`<org>+<name>`): an org admin's credentials (Basic)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, user: str | None = None) -> None:
        self.url = url.rstrip("/")
        auth = httpx.BasicAuth(user, token) if user else None
        headers = {} if user else {"Authorization": f"Bearer {token}"}
        self._http = httpx.Client(base_url=f"{self.url}/api/v1", timeout=timeout, headers=headers, auth=auth)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- organizations -----------------------------------------------------------------------------
    def list_orgs(self) -> list[dict]:
        return self._call("GET", "/organizations")["organizations"]

    def show_org(self, name: str) -> dict:
        return self._call("GET", f"/organizations/{name}")

    def create_org(self, name: str, settings: dict) -> dict:
        return self._call("POST", "/organizations", json={"name": name, **settings})

    def update_org(self, name: str, settings: dict, replace: bool = False) -> dict:
        return self._call("PUT" if replace else "PATCH", f"/organizations/{name}", json=settings)

    def delete_org(self, name: str, flush: bool = False) -> None:
        self._call("DELETE", f"/organizations/{name}" + ("?flush=true" if flush else ""))

    def cached(self, org: str, kind: str, limit: int | None = None, **params) -> Iterator[dict]:
        """The org's cached `kind` ("tags" or "blobs"; at most `limit`), following next_cursor."""
        query = {key: value for key, value in params.items() if value is not None}
        left = limit
        while left is None or left > 0:
            query["limit"] = PAGE if left is None else min(PAGE, left)
            page = self._call("GET", f"/organizations/{org}/{kind}", params=query)
            yield from page["items"]
            if left is not None:
                left -= len(page["items"])
            if page["next_cursor"] is None:
                return
            query["cursor"] = page["next_cursor"]

    def prewarm(self, org: str, references: list[str]) -> list[dict]:
        return self._call("POST", f"/organizations/{org}/prewarm", json={"references": references})["results"]

    # -- robots and org admins ---------------------------------------------------------------------
    def create_robot(self, org: str, name: str, repositories: list[str], all_cached: bool = False) -> dict:
        return self._call("POST", f"/organizations/{org}/robots",
                          json={"name": name, "repositories": repositories, "all_cached": all_cached})

    def create_org_admin(self, org: str, name: str) -> dict:
        return self._call("POST", f"/organizations/{org}/admins", json={"name": name})

    def list_robots(self, org: str) -> list[dict]:
        return self._call("GET", f"/organizations/{org}/robots")["robots"]

    def show_robot(self, org: str, name: str) -> dict:
        return self._call("GET", f"/organizations/{org}/robots/{name}")

    def robot_action(self, org: str, name: str, action: str) -> dict:
        """action: rotate, disable or enable."""
        return self._call("POST", f"/organizations/{org}/robots/{name}/{action}")

    def set_robot_repositories(self, org: str, name: str, repositories: list[str], all_cached: bool = False) -> dict:
        return self._call("PUT", f"/organizations/{org}/robots/{name}/repositories",
                          json={"repositories": repositories, "all_cached": all_cached})

    def delete_robot(self, org: str, name: str) -> None:
        self._call("DELETE", f"/organizations/{org}/robots/{name}")

    def admin_log(self, org: str | None = None, actor: str | None = None, limit: int | None = None) -> Iterator[dict]:
        """Every admin action (at most `limit`), oldest first, following next_cursor."""
        params = {key: value for key, value in (("org", org), ("actor", actor)) if value is not None}
        left = limit
        while left is None or left > 0:
            params["limit"] = PAGE if left is None else min(PAGE, left)
            page = self._call("GET", "/admin-log", params=params)
            yield from page["items"]
            if left is not None:
                left -= len(page["items"])
            if page["next_cursor"] is None:
                return
            params["cursor"] = page["next_cursor"]

    # -- retention ---------------------------------------------------------------------------------
    def images(self, org: str, limit: int | None = None) -> tuple[str, list[dict]]:
        """(the org's policy, its cached images in eviction order), following next_cursor."""
        params: dict = {"order": "eviction", "limit": PAGE}
        items: list[dict] = []
        while True:
            page = self._call("GET", f"/organizations/{org}/images", params=params)
            items += page["items"]
            if page["next_cursor"] is None or (limit is not None and len(items) >= limit):
                return page["policy"], items[:limit]
            params["cursor"] = page["next_cursor"]

    def flush(self, org: str, repository: str | None = None, tag: str | None = None, dry_run: bool = False) -> dict:
        body = {"repository": repository, "tag": tag, "dry_run": dry_run}
        return self._call("POST", f"/organizations/{org}/flush", json={k: v for k, v in body.items() if v is not None})

    def pin(self, org: str, repository: str, reference: dict, pinned: bool = True) -> dict:
        """`reference`: {"tag": ...} or {"digest": ...}."""
        return self._call("POST" if pinned else "DELETE", f"/organizations/{org}/pins",
                          json={"repository": repository, **reference})

    def simulate(self, org: str, quota_bytes: int, policies: list[str], since: str | None = None) -> dict:
        body = {"quota_bytes": quota_bytes, "policies": policies, **({"since": since} if since else {})}
        return self._call("POST", f"/organizations/{org}/simulate", json=body)

    def pins(self, org: str) -> list[dict]:
        return self._call("GET", f"/organizations/{org}/pins")["pins"]

    # -- audit log ---------------------------------------------------------------------------------
    def audit_pages(self, filters: dict, limit: int | None = None, page_size: int = PAGE,
                    path: str = "/audit") -> Iterator[list[dict]]:
        """Every matching row (at most `limit`), a page per request, following next_cursor.

        `path`: /audit, or /history/digest (the pulls of one digest, paged the same way)."""
        params = {key: value for key, value in filters.items() if value is not None}
        left = limit
        while left is None or left > 0:
            params["limit"] = page_size if left is None else min(page_size, left)
            page = self._call("GET", path, params=params)
            if page["items"]:
                yield page["items"]
            if left is not None:
                left -= len(page["items"])
            if page["next_cursor"] is None:
                return
            params["cursor"] = page["next_cursor"]

    # -- history -------------------------------------------------------------------------------------
    def history_tag(self, org: str, repository: str, tag: str, at: str | None = None) -> dict:
        """What the tag resolved to at `at`; AdminApiError 404 (with `error` holding previous/next) if nothing."""
        params = {"org": org, "repository": repository, "tag": tag, **({"at": at} if at else {})}
        return self._call("GET", "/history/tag", params=params)

    def digest_resolutions(self, digest: str, org: str | None = None) -> list[dict]:
        """When tags pointed at the digest (the `resolutions` of /history/digest)."""
        params = {"digest": digest, "limit": 1, **({"org": org} if org else {})}
        return self._call("GET", "/history/digest", params=params)["resolutions"]

    def seal(self) -> dict:
        return self._call("POST", "/audit/seals")

    def seals(self) -> list[dict]:
        return self._call("GET", "/audit/seals")["items"]

    # -- analytics -----------------------------------------------------------------------------------
    def analytics(self, kind: str, **params) -> dict:
        """/analytics/<kind> (summary, series, top) with the given query parameters (None: left out)."""
        return self._call("GET", f"/analytics/{kind}", params={k: v for k, v in params.items() if v is not None})

    def _call(self, method: str, path: str, **kwargs) -> dict:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise AdminApiError(f"cannot reach {self.url}: {error}") from None
        if response.status_code == 204:
            return {}
        try:
            body = response.json()
        except ValueError:
            raise AdminApiError(f"{self.url} answered {response.status_code} without JSON; is it Entrepôt?",
                                response.status_code) from None
        if response.is_error:
            error = body.get("error", {}) if isinstance(body, dict) else {}
            raise AdminApiError(error.get("message") or f"HTTP {response.status_code}", response.status_code,
                                error.get("fields"), error)
        return body
