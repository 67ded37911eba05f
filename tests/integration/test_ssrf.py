"""The SSRF guard against real servers on loopback: where an org's upstream, its redirects, its token realm and
its tag-list Link may lead, and the cut of a loop back to this server.

Loopback addresses stand for networks: 127.0.0.2 and 127.0.0.3 are what `[security] allowed_upstream_networks`
opens to admin-made orgs here; 127.0.0.1 is the "internal service" they must never reach.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from litestar.testing import TestClient

from infra.settings import OrgSettings, SecuritySettings, Settings, SettingsError, load_settings
from interfaces.bootstrap import bootstrap
from interfaces.http.app import create_app
from tests.support.hostile import stored_state
from tests.support.httpserver import LocalHTTPServer, Reply
from tests.support.inprocess import InProcessServer

pytestmark = pytest.mark.integration
TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACCEPT = {"Accept": "application/vnd.docker.distribution.manifest.v2+json"}
ALLOWED = ("127.0.0.2/32", "127.0.0.3/32")
DIGEST = "sha256:" + "ab" * 32


def api_version(request, server) -> Reply | None:
    if request.path == "/v2/":
        return Reply(200, {"Content-Type": "application/json"}, b"{}")
    return None


@pytest.fixture
def internal():
    """The internal service an upstream must not lead us to: it answers anything, and records it."""
    with LocalHTTPServer(lambda request, server: Reply(200, {"Content-Type": "application/json"},
                                                       b'{"secret": "internal"}')) as server:
        yield server


@pytest.fixture
def hostile():
    """An upstream on an allowed address whose answers each test scripts through `.script`."""
    def handler(request, server):
        return api_version(request, server) or server.script(request, server)
    server = LocalHTTPServer(handler, host="127.0.0.2")
    server.script = lambda request, server: Reply(404)
    with server:
        yield server


@pytest.fixture
def api(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"), admin_token=TOKEN,
                        organizations=(OrgSettings(name="hub", upstream="http://127.0.0.1:1"),),
                        security=SecuritySettings(allowed_upstream_networks=ALLOWED))
    container = bootstrap(settings)
    with TestClient(create_app(container)) as client:
        client.headers.update(AUTH)
        client.container = container
        yield client


def stored(api):
    """What a refused request must not change: what the cache holds (events of the cache, blob files, credentials)."""
    state = stored_state(Path(api.container.data_dir))
    return ({name: value for name, value in state.events.items() if not name.startswith("pull")}, state.files,
            api.container.records.recorder.max_notification_id(),
            api.container.credentials.recorder.max_notification_id())


def create(api, upstream: str, name: str = "evil", **settings):
    return api.post("/api/v1/organizations", json={"name": name, "upstream": upstream, **settings})


@pytest.mark.parametrize("upstream", [
    "http://169.254.169.254", "http://metadata.google.internal", "http://[fe80::1]:5000", "http://[fd00:ec2::254]",
    "http://127.0.0.1:5000", "http://127.1:5000", "http://2130706433:5000", "http://0x7f000001:5000",
    "http://[::ffff:127.0.0.1]:5000", "http://[::1]:5000", "http://localhost:5000", "http://10.0.0.1",
    "http://192.168.1.1", "file:///etc/passwd", "gopher://127.0.0.2", "http://user:secret@127.0.0.2",
    "http://127.0.0.2/\r\nX-Injected: 1", "http://127.0.0.2 :80", "http://127.0.0.2#x", "http://127.0.0.2?x=1",
    "http://127.0.0.2:0", "http://127.0.0.2:99999",
])
def test_an_upstream_pointing_inside_or_malformed_is_refused_at_creation_naming_the_field(api, upstream):
    before = stored(api)
    response = create(api, upstream)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert "upstream" in error["fields"]
    assert "secret" not in response.text
    assert stored(api) == before
    assert [org["name"] for org in api.get("/api/v1/organizations").json()["organizations"]] == ["hub"]


def test_an_update_to_an_internal_upstream_is_refused_and_changes_nothing(api, hostile):
    assert create(api, hostile.url).status_code == 201
    before = stored(api)
    response = api.patch("/api/v1/organizations/evil", json={"upstream": "http://127.0.0.1:5000"})
    assert response.status_code == 422 and "upstream" in response.json()["error"]["fields"]
    assert stored(api) == before
    assert api.get("/api/v1/organizations/evil").json()["organization"]["upstream"] == hostile.url


def test_a_config_file_org_may_use_loopback_but_never_a_metadata_address(tmp_path):
    config = tmp_path / "entrepot.toml"
    config.write_text('[[organizations]]\nname = "local"\nupstream = "http://127.0.0.1:5000"\n')
    assert load_settings(str(config)).organizations[0].upstream == "http://127.0.0.1:5000"
    config.write_text('[[organizations]]\nname = "meta"\nupstream = "http://169.254.169.254"\n')
    with pytest.raises(SettingsError) as caught:
        load_settings(str(config))
    assert "\n" not in str(caught.value) and "meta" in str(caught.value) and "upstream" in str(caught.value)
    config.write_text('[security]\nallowed_upstream_networks = ["10.0.0.0/33"]\n')
    with pytest.raises(SettingsError, match="allowed_upstream_networks"):
        load_settings(str(config))


@pytest.mark.parametrize("where", ["http://127.0.0.1:{port}/secret", "http://2130706433:{port}/secret",
                                   "http://[::ffff:127.0.0.1]:{port}/secret", "http://localhost:{port}/secret",
                                   "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"])
def test_a_redirect_to_an_internal_address_is_not_followed(api, hostile, internal, where):
    location = where.format(port=internal.url.rsplit(":", 1)[1])
    hostile.script = lambda request, server: Reply(307, {"Location": location})
    assert create(api, hostile.url).status_code == 201
    before = stored(api)
    manifest = api.get("/v2/evil/team/app/manifests/latest", headers=ACCEPT)
    blob = api.get(f"/v2/evil/team/app/blobs/{DIGEST}")
    for response in (manifest, blob):
        assert response.status_code >= 400, response.text
        assert "internal" not in response.text
    assert "SSRF policy" in manifest.json()["errors"][0]["message"]
    assert internal.requests == []
    assert stored(api) == before


def test_an_admin_org_reaches_only_the_allowed_network_at_connection_time(api, hostile, internal):
    """127.0.0.2 is allowed; a redirect to 127.0.0.3 (allowed too) is followed, one to 127.0.0.1 is not."""
    with LocalHTTPServer(lambda request, server: Reply(404, {}, b"{}"), host="127.0.0.3") as other:
        hostile.script = lambda request, server: Reply(307, {"Location": other.url + request.path})
        assert create(api, hostile.url).status_code == 201
        response = api.get("/v2/evil/team/app/manifests/latest", headers=ACCEPT)
        assert response.status_code == 404                     # followed to 127.0.0.3, which has nothing
        assert [r.path for r in other.requests] == ["/v2/team/app/manifests/latest"]
    assert internal.requests == []


def test_a_hostile_token_realm_is_not_asked_and_credentials_never_go_in_the_clear_to_another_host(
        api, hostile, internal):
    realms: list = []
    with LocalHTTPServer(lambda request, server: Reply(401), host="127.0.0.3") as stranger:
        def challenge(request, server):
            if request.path.startswith("/token"):        # the upstream's own realm: credentials are fine here
                return Reply(200, {"Content-Type": "application/json"}, json.dumps({"token": "t"}).encode())
            realm = realms[0]
            return Reply(401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="evil"'})
        hostile.script = challenge
        assert create(api, hostile.url, username="robot", password="s3cret-upstream-password").status_code == 201
        before = stored(api)

        realms[:] = [internal.url + "/token"]           # an internal address: never asked
        response = api.get("/v2/evil/team/app/manifests/latest", headers=ACCEPT)
        assert response.status_code >= 400 and "SSRF policy" in response.text
        assert internal.requests == []

        realms[:] = [stranger.url + "/token"]           # allowed, but plain http on another host: no credentials
        api.get("/v2/evil/team/b/manifests/latest", headers=ACCEPT)
        assert stranger.requests and all("authorization" not in r.headers for r in stranger.requests)

        realms[:] = [hostile.url + "/token"]            # the upstream's own host: Basic credentials are sent
        api.get("/v2/evil/team/c/manifests/latest", headers=ACCEPT)
        own = [r for r in hostile.requests if r.path.startswith("/token")]
        assert own and own[-1].headers.get("authorization", "").startswith("Basic ")
        assert stored(api) == before


def test_a_tag_list_link_leading_off_the_upstream_host_is_not_followed(api, hostile, internal):
    link = f'<{internal.url}/v2/team/app/tags/list?n=1&last=a>; rel="next"'
    hostile.script = lambda request, server: Reply(
        200, {"Content-Type": "application/json", "Link": link}, b'{"name": "team/app", "tags": ["a"]}')
    assert create(api, hostile.url).status_code == 201
    before = stored(api)
    response = api.get("/v2/evil/team/app/tags/list")
    assert "internal" not in response.text
    assert internal.requests == []
    assert stored(api) == before


def test_an_org_whose_upstream_is_this_server_is_refused_and_a_loop_is_cut_with_508(tmp_path):
    server_url: list[str] = []
    answers: list[int] = []

    def relay(request, server):   # an innocent-looking upstream that leads back to the server
        if request.path == "/v2/":
            return Reply(200, {}, b"{}")
        forwarded = httpx.get(server_url[0] + request.path, headers={k: v for k, v in request.headers.items()
                                                                     if k in ("accept", "entrepot-via")})
        answers.append(forwarded.status_code)
        return Reply(forwarded.status_code, {"Content-Type": "application/json"}, forwarded.content)

    with LocalHTTPServer(relay) as relay_server:
        settings = Settings(data_dir=str(tmp_path / "data"), admin_token=TOKEN,
                            organizations=(OrgSettings(name="loop", upstream=relay_server.url),),
                            security=SecuritySettings(allowed_upstream_networks=("127.0.0.0/8",)))
        with InProcessServer(settings) as server:
            server_url.append(server.url)
            created = httpx.post(server.url + "/api/v1/organizations", headers=AUTH,
                                 json={"name": "self", "upstream": server.url})
            assert created.status_code == 422, created.text
            assert "this server itself" in created.json()["error"]["fields"]["upstream"]

            response = httpx.get(server.url + "/v2/loop/team/app/manifests/latest", headers=ACCEPT, timeout=30)
            assert response.status_code == 503, response.text
            assert answers == [508]                      # the looped request was cut at its first return
            assert len(relay_server.requests) == len(answers)   # nothing looped further
