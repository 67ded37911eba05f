"""Which upstream requests go through the egress proxy: settings first, else the environment, minus NO_PROXY."""

from __future__ import annotations

import httpx
import pytest

from infra.settings import SettingsError, load_settings
from infra.upstream.egress import EgressProxy, egress_proxy

PROXY = "http://proxy.corp:3128"


def through(egress: EgressProxy, url: str) -> str | None:
    return egress.proxy_for(httpx.URL(url))


def test_the_setting_applies_to_both_schemes_except_the_no_proxy_entries():
    egress = egress_proxy(PROXY, ("registry.internal", ".corp", "10.0.0.0/8", "[fd00::1]"), {"HTTPS_PROXY": "http://x:1"})
    assert through(egress, "https://registry-1.docker.io/v2/").startswith(PROXY)
    assert through(egress, "http://quay.io/v2/").startswith(PROXY)
    for direct in ("https://registry.internal/v2/", "https://mirror.corp/v2/", "https://a.b.corp:5000/v2/",
                   "http://10.1.2.3:5000/v2/", "http://[fd00::1]/v2/"):
        assert through(egress, direct) is None, direct
    # A suffix matches whole labels only: "notcorp" is not under ".corp".
    assert through(egress, "https://notcorp/v2/") is not None
    assert through(egress, "http://11.1.2.3/v2/") is not None


def test_the_environment_is_used_when_the_setting_is_empty_and_ignored_with_none():
    environ = {"https_proxy": "http://secure:1", "HTTP_PROXY": "http://plain:2", "NO_PROXY": "localhost, .internal"}
    egress = egress_proxy("", (), environ)
    assert through(egress, "https://ghcr.io/v2/").startswith("http://secure:1")
    assert through(egress, "http://ghcr.io/v2/").startswith("http://plain:2")
    assert through(egress, "https://a.internal/v2/") is None and through(egress, "http://localhost:5000/") is None
    assert not egress_proxy("none", (), environ)
    assert not egress_proxy("", (), {})
    assert through(egress_proxy("", (), {"ALL_PROXY": PROXY, "NO_PROXY": "*"}), "https://ghcr.io/") is None


@pytest.mark.parametrize("proxy, environ, message", [
    ("proxy.corp:3128", {}, "[upstream] proxy: must be an http:// or https:// URL with a host"),
    ("socks5://proxy:1080", {}, "[upstream] proxy: must be an http:// or https:// URL"),
    ("", {"HTTPS_PROXY": "ftp://x"}, "HTTPS_PROXY: must be an http:// or https:// URL"),
])
def test_a_malformed_proxy_is_one_line_naming_where_it_came_from(tmp_path, monkeypatch, proxy, environ, message):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "https_proxy", "http_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "entrepot.toml"
    path.write_text(f'[upstream]\nproxy = "{proxy}"\n')
    with pytest.raises(SettingsError) as raised:
        load_settings(str(path))
    assert message in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


def test_a_no_proxy_entry_that_is_no_host_nor_network_is_refused(tmp_path):
    path = tmp_path / "entrepot.toml"
    path.write_text(f'[upstream]\nproxy = "{PROXY}"\nno_proxy = ["10.0.0.0/99"]\n')
    with pytest.raises(SettingsError, match=r"no_proxy: '10.0.0.0/99' is neither"):
        load_settings(str(path))
