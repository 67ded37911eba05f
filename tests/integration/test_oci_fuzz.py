"""An OCI fuzz test: a few hundred generated malformed pull requests against a real `entrepot serve` in front of
a real upstream registry. Every one is answered with a 4xx (never a 5xx), none reaches the upstream, and nothing
stored changes: no event (so no pull recorded), no blob file.

Seeded (ENTREPOT_FUZZ_SEED picks another seed; a failure names the seed and the request) and bounded in count
and time. Each generated request has at least one part that must be refused: a name, a reference, a ?ns= or a
Range that the spec (or our limits) do not allow.
"""

from __future__ import annotations

import os
import random
import time

import httpx
import pytest

from tests.support.hostile import raw_request, stored_state
from tests.support.images import build_image, push_image

pytestmark = pytest.mark.integration
SEED = int(os.environ.get("ENTREPOT_FUZZ_SEED", "20261129"))
REQUESTS = 400
TIME_LIMIT = 90.0   # seconds for all of them, on a loaded 2-core machine

HEX = "0123456789abcdef"
BAD_NAME_PARTS = ["Upper", "a..b", "a___b", "-lead", "trail-", "a b", "%00", "%0d%0a", "%2F", "%2f", "%ff", "%2e%2e",
                  "..", ".", "a%23b", "a;b", "%c3%a9", "a:b", "a@b", "*", "a~b", "a+b", "%25", "a%3Fb"]


class Fuzzer:
    def __init__(self, rng: random.Random, digest: str) -> None:
        self.rng = rng
        self.digest = digest   # a blob the cache holds

    def name_part(self) -> str:
        return self.rng.choice(["team", "app", "library", "a", "x-y", "a.b", "a_b", "a__b", "0"])

    def good_name(self) -> str:
        return "/".join(["hub", *(self.name_part() for _ in range(self.rng.randint(1, 3)))])

    def bad_name(self) -> str:
        parts = ["hub", *(self.name_part() for _ in range(self.rng.randint(1, 3)))]
        kind = self.rng.randrange(4)
        if kind == 0:    # too long, as sent or with many components
            filler = self.rng.choice(["a" * self.rng.randint(256, 3000), "/".join(["ab"] * self.rng.randint(90, 400))])
            parts.insert(self.rng.randint(1, len(parts)), filler)
        elif kind == 1:  # an empty segment: //, leading or trailing slash
            parts.insert(self.rng.randint(0, len(parts)), "")
        else:            # a character or encoding the grammar refuses
            i = self.rng.randrange(1, len(parts))
            bad = self.rng.choice(BAD_NAME_PARTS)
            parts[i] = self.rng.choice([bad, parts[i] + bad, bad + parts[i]])
        return "/".join(parts)

    def good_reference(self, kind: str) -> str:
        if kind == "blobs":
            return self.digest
        return self.rng.choice(["1", "latest", "v1.0", "sha256:" + "".join(self.rng.choices(HEX, k=64))])

    def bad_reference(self, kind: str) -> str:
        return self.rng.choice([
            "", "-tag", ".tag", "t" * self.rng.randint(129, 5000), "tag%00", "tag%0d%0aX:1", "t%2Fg", "%ff",
            "sha256:" + "".join(self.rng.choices(HEX, k=self.rng.randint(1, 63))),
            "sha256:" + "".join(self.rng.choices(HEX, k=65)), "sha256:" + "A" * 64, "md5:" + "0" * 32,
            "sha256:" + "g" * 64, "sha512:" + "0" * 64, "SHA256:" + "0" * 64, ":" * 3, "sha256:",
            "sha256:" + "0" * 64 + "%00"]) if kind != "tags" else ""

    def bad_ns(self) -> str:
        return self.rng.choice([
            "127.0.0.1%0d%0aX-Injected:%201", "docker.io%00", "docker.io%23frag", "docker.io/x", "https://docker.io",
            "a%20b", "x" * self.rng.randint(260, 4000), "docker.io:" + "9" * self.rng.randint(6, 5000), "-a.io",
            "a..io", "%ff", "[::1", "docker.io:", "", ":80"])

    def bad_range(self) -> str:
        digits = "9" * self.rng.randint(4300, 9000)
        return self.rng.choice([
            f"bytes={digits}-", f"bytes={digits}-{digits}", f"bytes={digits}-1", "bytes=5-1", "bytes=-", "bytes=-0",
            "items=0-1", "bytes=0-1,3-4", "bytes=a-b", "bytes=" + "1" * 3000 + "x", "bytes = 0-1", "0-1"])

    def request(self) -> tuple[str, str, dict[str, str]]:
        """(method, target, headers) of a request with at least one part that must be refused."""
        kind = self.rng.choice(["manifests", "blobs", "tags"])
        flaws = self.rng.sample(["name", "reference", "ns", "range"], self.rng.randint(1, 2))
        if kind == "tags" and flaws == ["reference"]:
            flaws = ["name"]
        if "range" in flaws and kind != "blobs":
            kind = "blobs"
        name = self.bad_name() if "name" in flaws else self.good_name()
        if "range" in flaws and "name" not in flaws:
            name = "hub/team/app"   # a warm blob, so the range is what gets refused
        reference = self.bad_reference(kind) if "reference" in flaws else self.good_reference(kind)
        path = f"/v2/{name}/tags/list" if kind == "tags" else f"/v2/{name}/{kind}/{reference}"
        query = []
        if "ns" in flaws:
            query.append(f"ns={self.bad_ns()}")
        if kind == "tags" and self.rng.random() < 0.3:
            query.append(f"n={self.rng.choice(['-1', 'x', '9' * 5000, ''])}")
        headers = {"Range": self.bad_range()} if "range" in flaws else {}
        if self.rng.random() < 0.2:
            headers["Accept"] = ",".join(self.rng.choices(["*/*", "a/b", "x" * 200, ";q=0"], k=self.rng.randint(1, 50)))
        method = self.rng.choice(["GET", "GET", "GET", "HEAD"])
        return method, path + ("?" + "&".join(query) if query else ""), headers


@pytest.fixture(scope="module")
def fuzz_target(module_upstream_registry_factory, module_entrepot_server_factory):
    # Shared by both tests, in either order: the malformed-request test compares the stored state
    # and the upstream's requests from its own start (settled_state, mark()).
    upstream_registry = module_upstream_registry_factory()
    image = build_image("fuzz", layers=1, layer_size=10_000)
    push_image(upstream_registry.url, "team/app", "1", image)
    server = module_entrepot_server_factory([{"name": "hub", "upstream": upstream_registry.url, "default": True}])
    base = f"{server.url}/v2/hub/team/app"
    assert httpx.get(f"{base}/manifests/1", timeout=30).status_code == 200
    assert httpx.get(f"{base}/blobs/{image.layers[0].digest}", timeout=30).status_code == 200
    return server, upstream_registry, image


def settled_state(data_dir, timeout: float = 5.0):
    """The stored state once two reads a moment apart agree (the warm-up's writes have landed)."""
    deadline = time.monotonic() + timeout
    state = stored_state(data_dir)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        again = stored_state(data_dir)
        if again == state:
            return state
        state = again
    return state


def test_malformed_oci_requests_get_a_4xx_never_reach_upstream_and_change_nothing_stored(fuzz_target):
    server, upstream, image = fuzz_target
    fuzzer = Fuzzer(random.Random(SEED), image.layers[0].digest)
    before = settled_state(server.data_dir)
    upstream.mark()
    started = time.monotonic()
    statuses: dict[int, int] = {}
    for i in range(REQUESTS):
        assert time.monotonic() - started < TIME_LIMIT, f"fuzzing took over {TIME_LIMIT}s ({i} requests sent)"
        method, target, headers = fuzzer.request()
        answer = raw_request("127.0.0.1", server.port, method, target, headers)
        statuses[answer.status] = statuses.get(answer.status, 0) + 1
        where = f"seed {SEED}, request {i}: {method} {target[:300]} {str(headers)[:200]} -> {answer.status} " \
                f"{answer.body[:300]!r}"
        assert 400 <= answer.status < 500, where
        if method == "GET" and answer.status != 405:
            assert answer.error_code(), where      # an OCI error body, not a bare status
        assert "x-injected" not in answer.headers, where
    assert upstream.requests() == [], "malformed requests reached the upstream"
    assert stored_state(server.data_dir) == before, "a malformed request changed what is stored"
    assert httpx.get(f"{server.url}/v2/hub/team/app/manifests/1", timeout=10).status_code == 200
    assert sum(statuses.values()) == REQUESTS and len(statuses) > 2   # a variety of answers, not one path


def well_formed_request(fuzzer: Fuzzer) -> tuple[str, str, dict[str, str]]:
    """A request the spec allows, for repositories, tags and hosts that mostly do not exist."""
    rng = fuzzer.rng
    kind = rng.choice(["manifests", "blobs", "tags"])
    name = rng.choice([fuzzer.good_name(), "hub/team/app", "team/app", "library/" + fuzzer.name_part()])
    reference = rng.choice([fuzzer.good_reference(kind), "sha256:" + "".join(rng.choices(HEX, k=64)), "t" * 128])
    if kind == "blobs" and not reference.startswith("sha256:"):
        reference = fuzzer.digest
    path = f"/v2/{name}/tags/list" if kind == "tags" else f"/v2/{name}/{kind}/{reference}"
    query = rng.choice(["", "?ns=docker.io", "?ns=quay.io:443", "?ns=127.0.0.1:1", "?n=2&last=0"])
    headers = {"Range": rng.choice(["bytes=0-0", "bytes=-1", "bytes=1-"])} if kind == "blobs" and rng.random() < .3 \
        else {}
    return rng.choice(["GET", "HEAD"]), path + query, headers


def test_well_formed_requests_for_unknown_content_never_get_a_500(fuzz_target):
    server, upstream, image = fuzz_target
    fuzzer = Fuzzer(random.Random(SEED + 1), image.layers[0].digest)
    started = time.monotonic()
    for i in range(150):
        assert time.monotonic() - started < TIME_LIMIT, f"took over {TIME_LIMIT}s ({i} requests sent)"
        method, target, headers = well_formed_request(fuzzer)
        answer = raw_request("127.0.0.1", server.port, method, target, headers)
        where = f"seed {SEED + 1}, request {i}: {method} {target} {headers} -> {answer.status} {answer.body[:300]!r}"
        # 502/503 only when the upstream is to blame; never a bare 500
        assert answer.status < 500 or answer.status in (502, 503), where
    assert httpx.get(f"{server.url}/v2/hub/team/app/manifests/1", timeout=10).status_code == 200
