"""An upstream that implements the OCI 1.1 referrers API (distribution-spec 1.1, "Listing Referrers"),
for the tests of that path: distribution 2.8 has none."""

from __future__ import annotations

import json

from domain.referrers import Descriptor
from tests.support.httpserver import Reply

INDEX = "application/vnd.oci.image.index.v1+json"
COSIGN = "application/vnd.dev.cosign.simplesigning.v1+json"
SBOM = "application/spdx+json"
SUBJECT = "sha256:" + "5" * 64
PAGES = [
    [Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "1" * 64, 700, COSIGN, {"a": "1"})],
    [Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "2" * 64, 800, SBOM),
     Descriptor(INDEX, "sha256:" + "3" * 64, 900)],
]


def referrers_api(request, server) -> Reply:
    """The spec's answer: an image index per page, the next page named by Link; 404 for anything else."""
    path, _, query = request.path.partition("?")
    if path == f"/v2/team/app/referrers/{SUBJECT}":
        page = 1 if "page=2" in query else 0
        body = json.dumps({"schemaVersion": 2, "mediaType": INDEX,
                           "manifests": [d.as_json() for d in PAGES[page]]}).encode()
        headers = {"Content-Type": INDEX}
        if page == 0:
            headers["Link"] = f'<{path}?page=2>; rel="next"'
        return Reply(200, headers, body)
    return Reply(404, {"Content-Type": "application/json"},
                 b'{"errors": [{"code": "NAME_UNKNOWN", "message": "not here"}]}')


