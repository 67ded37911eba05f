"""The one org settings type: declared once, strict, bounded, normalised; every other shape derives from it."""

from __future__ import annotations

import argparse

import msgspec
import pytest

from application.admin import OrgSummary
from application.credentials import Credentials
from application.orgs import OrgConfig, OrgDirectory
from application.cache_records import CacheRecords
from domain.org import DEFAULTS, RESERVED_ORG_NAMES, CacheOrg, InvalidOrgSettings, OrgSettings, validate_org_name
from domain.org_settings import MAX_SECONDS
from infra.settings import OrgSettings as ConfiguredOrg
from interfaces.cli_admin import _org_settings
from interfaces.http.admin_bodies import OrgChangesBody, OrgCreateBody, OrgSettingsBody

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}
FIELDS = set(OrgSettings.__struct_fields__)


def test_every_setting_has_one_default_declared_in_the_domain_type():
    assert DEFAULTS.as_event() == {
        "upstream": "https://registry-1.docker.io", "namespace": "", "staleness_seconds": 300,
        "max_stale_seconds": 604800, "negative_cache_seconds": 30, "on_upstream_denied": "serve-stale",
        "rate_limit_floor": 0, "username": "", "default": False, "allow": [], "deny": [], "anonymous_pull": True,
        "quota_bytes": 0, "eviction_policy": "lru"}


@pytest.mark.parametrize("values, field", [
    ({"upstream": "docker.io", "staleness_seconds": "300"}, "staleness_seconds"),
    ({"upstream": "docker.io", "default": "true"}, "default"),
    ({"upstream": "docker.io", "max_stale_seconds": 10**30}, "max_stale_seconds"),
    ({"upstream": "docker.io", "negative_cache_seconds": MAX_SECONDS + 1}, "negative_cache_seconds"),
    ({"upstream": "docker.io", "staleness_seconds": 1.5}, "staleness_seconds"),
    ({"upstream": "docker.io", "staleness_seconds": True}, "staleness_seconds"),
    ({"upstream": "x" * 5000}, "upstream"),
    ({"upstream": "https://a b"}, "upstream"),
    ({"upstream": "https://h\x00"}, "upstream"),
    ({"upstream": "docker.io", "username": "u" * 100_000}, "username"),
    ({"upstream": "docker.io", "namespace": "Bad"}, "namespace"),
    ({"upstream": "docker.io", "on_upstream_denied": "panic"}, "on_upstream_denied"),
    ({"upstream": "docker.io", "colour": "blue"}, "colour"),
    ({}, "upstream"),
])
def test_settings_are_strictly_typed_and_bounded_and_errors_name_the_setting(values, field):
    with pytest.raises(InvalidOrgSettings) as raised:
        OrgSettings.parse(values)
    assert raised.value.field == field and str(raised.value).startswith(field), str(raised.value)


def test_ten_years_is_the_longest_time_setting():
    assert OrgSettings.parse({"upstream": "docker.io", "max_stale_seconds": MAX_SECONDS}).max_stale_seconds == MAX_SECONDS


@pytest.mark.parametrize("name", sorted(RESERVED_ORG_NAMES) + ["a" * 65])
def test_reserved_and_overlong_org_names_are_refused(name):
    with pytest.raises(InvalidOrgSettings):
        validate_org_name(name)


def test_the_config_entry_admin_bodies_answers_and_hot_path_config_carry_every_setting():
    for shape in (ConfiguredOrg, OrgCreateBody, OrgSettingsBody, OrgChangesBody, OrgSummary, OrgConfig):
        assert FIELDS <= set(shape.__struct_fields__), shape
    assert set(OrgSummary.__struct_fields__) == FIELDS | {"name", "password_set"}   # never the password
    assert set(ConfiguredOrg.__struct_fields__) == FIELDS | {"name", "password"}


def test_the_cli_has_one_flag_per_setting():
    parser = _org_settings(argparse.ArgumentParser())
    dests = {action.dest for action in parser._actions}
    assert FIELDS <= dests
    args = parser.parse_args(["--staleness-seconds", "60", "--no-default", "--on-upstream-denied", "refuse"])
    assert (args.staleness_seconds, args.default, args.on_upstream_denied, args.upstream) == (60, False, "refuse", None)


def test_the_partial_update_body_leaves_absent_settings_unset():
    body = msgspec.convert({"staleness_seconds": 5}, OrgChangesBody, strict=True)
    assert body.staleness_seconds == 5 and body.upstream is msgspec.UNSET and body.password is msgspec.UNSET


def test_events_written_with_the_old_settings_shape_still_load():
    """The first release recorded six settings; later ones added three. Old streams must still load."""
    records = CacheRecords(env=POPO)
    old = CacheOrg(name="hub", settings={"upstream": "https://registry-1.docker.io", "namespace": "",
                                         "staleness_seconds": 120, "max_stale_seconds": 10**30,
                                         "username": "", "default": True})
    old.reconfigure({"staleness_seconds": 60})
    records.save(old)

    config = OrgDirectory(records, Credentials(env=POPO), ttl=0).get("hub")

    assert (config.staleness_seconds, config.default) == (60, True)
    assert (config.negative_cache_seconds, config.on_upstream_denied, config.rate_limit_floor) == (30, "serve-stale", 0)
    assert config.max_stale_seconds == MAX_SECONDS   # accepted unbounded once, clamped on reading
    assert records.get_org("hub").current == config.settings


def test_an_upstream_recorded_under_looser_rules_still_loads_as_recorded():
    assert OrgSettings.from_stored({"upstream": "https://h?x", "namespace": "Old"}).upstream == "https://h?x"
    records = CacheRecords(env=POPO)
    records.save(CacheOrg(name="old", settings={"upstream": "https://h?x", "namespace": "", "staleness_seconds": 1,
                                                 "max_stale_seconds": 1, "username": "", "default": False}))
    config = OrgDirectory(records, Credentials(env=POPO), ttl=0).get("old")
    assert config.target("alpine").base_url == "https://h?x" and config.settings.upstream == "https://h?x"


def test_org_events_carry_the_settings_dict_and_never_the_password():
    records = CacheRecords(env=POPO)
    orgs = OrgDirectory(records, Credentials(env=POPO), ttl=0)
    orgs.apply("priv", {"upstream": "https://r.example", "username": "u", "password": "secret"})
    orgs.apply("priv", {"upstream": "https://r.example", "username": "v", "password": "secret2"})
    recorded = [records.mapper.to_domain_event(n) for n in records.recorder.select_notifications(start=1, limit=9)]
    assert set(recorded[0].settings) == FIELDS and recorded[1].changes == {"username": "v"}
    assert "secret" not in repr([vars(event) for event in recorded])
