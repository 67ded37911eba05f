"""The access log keeps query parameter names but never the value of a credential-like one."""

from __future__ import annotations

import pytest

from interfaces.http.access_log import _target, redacted


@pytest.mark.parametrize("query, expected", [
    (b"ns=docker.io", b"ns=docker.io"),
    (b"n=10&last=3.19&ns=quay.io", b"n=10&last=3.19&ns=quay.io"),
    (b"token=abc.def.ghi", b"token=REDACTED"),
    (b"ns=docker.io&access_token=eyJ&n=1", b"ns=docker.io&access_token=REDACTED&n=1"),
    (b"X-Amz-Algorithm=AWS4&X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=deadbeef",
     b"X-Amz-Algorithm=AWS4&X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED"),
    (b"PASSWORD=hunter2&Secret=x&signature=y&my_api_token=z", b"PASSWORD=REDACTED&Secret=REDACTED&signature=REDACTED"
                                                              b"&my_api_token=REDACTED"),
    (b"%74oken=encoded-name", b"%74oken=REDACTED"),
    (b"token", b"token"), (b"", b""),
])
def test_credential_like_query_parameters_are_redacted(query, expected):
    assert redacted(query) == expected


def test_the_logged_target_has_the_raw_path_and_the_redacted_query():
    scope = {"path": "/v2/hub/a/manifests/1", "raw_path": b"/v2/hub/a/manifests/1",
             "query_string": b"ns=docker.io&token=s3cr3t"}
    assert _target(scope) == "/v2/hub/a/manifests/1?ns=docker.io&token=REDACTED"
