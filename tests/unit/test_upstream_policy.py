"""The SSRF policy (domain/upstream_policy.py), the upstream URL rules and the allow/deny patterns, as pure functions."""

from __future__ import annotations

import ipaddress

import pytest

from domain.org_settings import InvalidOrgSettings, OrgSettings, normalize_upstream
from domain.repository_patterns import repository_access
from domain.upstream_policy import OPERATOR, STRICT, UpstreamPolicy, host_literal, parse_networks

LOOPBACK_SPELLINGS = ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1", "[::ffff:127.0.0.1]",
                      "[::ffff:7f00:1]", "[::1]", "localhost.", "127.0.0.1."]


@pytest.mark.parametrize("host", [h for h in LOOPBACK_SPELLINGS if "localhost" not in h])
def test_every_spelling_of_a_loopback_address_is_refused_for_an_admin_org(host):
    assert STRICT.host_refusal("http", host) is not None
    assert OPERATOR.host_refusal("http", host) is None      # the config file's orgs may use loopback


@pytest.mark.parametrize("host", ["169.254.169.254", "2852039166", "0xa9fea9fe", "169.254.1", "[fe80::1]",
                                  "[fd00:ec2::254]", "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]",
                                  "[2002:a9fe:a9fe::1]", "100.100.100.200", "0.0.0.0", "0", "224.0.0.1",
                                  "metadata.google.internal", "METADATA.GOOGLE.INTERNAL.", "metadata",
                                  "instance-data"])
def test_link_local_and_metadata_addresses_are_refused_even_for_the_operator(host):
    assert OPERATOR.host_refusal("http", host) is not None
    assert UpstreamPolicy(allowed_networks=parse_networks(["0.0.0.0/0", "::/0"])).host_refusal("http", host)


@pytest.mark.parametrize("scheme", ["file", "ftp", "gopher", "data", ""])
def test_schemes_other_than_http_and_https_are_refused(scheme):
    assert OPERATOR.host_refusal(scheme, "registry.example") is not None


def test_private_ranges_open_only_inside_the_allowed_networks():
    policy = UpstreamPolicy(allowed_networks=parse_networks(["10.1.0.0/16", "127.0.0.2"]))
    assert policy.address_refusal(ipaddress.ip_address("10.1.2.3")) is None
    assert policy.address_refusal(ipaddress.ip_address("127.0.0.2")) is None
    assert policy.address_refusal(ipaddress.ip_address("10.2.0.1")) is not None
    assert policy.address_refusal(ipaddress.ip_address("127.0.0.1")) is not None
    assert policy.address_refusal(ipaddress.ip_address("::ffff:10.2.0.1")) is not None
    assert policy.address_refusal(ipaddress.ip_address("192.168.1.1")) is not None
    assert policy.address_refusal(ipaddress.ip_address("8.8.8.8")) is None


def test_host_literal_reads_what_a_resolver_would():
    assert host_literal("127.1") == ipaddress.ip_address("127.0.0.1")
    assert host_literal("10.258") == ipaddress.ip_address("10.0.1.2")
    assert host_literal("registry-1.docker.io") is None
    assert host_literal("1.2.3.4.5") is None
    assert host_literal("256.1.1.1") is None


def test_a_bad_network_is_named():
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


@pytest.mark.parametrize("url", ["http://user:pass@registry.example", "http://registry.example/\r\nX-Evil: 1",
                                 "http://registry .example", "http://registry.example#frag",
                                 "http://registry.example?x=1", "http://registry.example:0",
                                 "http://registry.example:65536", "http://registry.example:", "http://registry.example:x",
                                 "file:///etc/passwd", "gopher://registry.example", "http://registry_example",
                                 "http://[::1", "http://", "http://registry.example/v2"])
def test_malformed_upstream_urls_are_refused_naming_the_field(url):
    with pytest.raises(InvalidOrgSettings) as caught:
        normalize_upstream(url)
    assert caught.value.field == "upstream"


@pytest.mark.parametrize("url", ["https://registry.example:5000", "http://[::1]:5000", "registry.example", "docker.io",
                                 "http://10.0.0.1"])
def test_well_formed_upstream_urls_are_kept(url):
    assert normalize_upstream(url).startswith(("http://", "https://"))


def test_deny_wins_over_allow_and_an_empty_allow_list_allows_everything():
    access = repository_access(("library/*",), ("library/busybox",))
    assert access.refusal("library/alpine") is None
    assert "deny pattern 'library/busybox'" in access.refusal("library/busybox")
    assert "allow list" in access.refusal("bitnami/redis")
    assert repository_access((), ()).refusal("anything/at/all") is None
    assert access.allowed_explicitly("library/alpine") and not access.allowed_explicitly("library/busybox")
    assert not repository_access((), ()).allowed_explicitly("library/alpine")


def test_patterns_are_compiled_once_per_distinct_pair_of_lists():
    settings = OrgSettings.parse({"upstream": "docker.io", "allow": ["library/*"]})
    again = OrgSettings.parse({"upstream": "docker.io", "allow": ["library/*"]})
    assert settings.access is again.access


@pytest.mark.parametrize("pattern", ["", "Library/*", "library/[ab]", "a" * 300, "library/alpine\n"])
def test_patterns_outside_the_name_grammar_are_refused(pattern):
    with pytest.raises(InvalidOrgSettings) as caught:
        OrgSettings.parse({"upstream": "docker.io", "deny": [pattern]})
    assert caught.value.field == "deny"
