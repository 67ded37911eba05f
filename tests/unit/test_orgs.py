"""Cache organizations: settings validation, idempotent application, Docker Hub mapping."""

import pytest

from application.credentials import Credentials
from application.orgs import OrgDirectory
from application.cache_records import CacheRecords
from eventsourcing.application import AggregateNotFoundError

from domain.org import DEFAULTS as OrgSettingsDefaults
from domain.org import (DOCKER_HUB_URL, CacheOrg, InvalidOrgSettings, normalize_settings, normalize_upstream,
                        upstream_repository)

POPO = {"PERSISTENCE_MODULE": "eventsourcing.popo"}


def directory() -> tuple[OrgDirectory, CacheRecords]:
    records = CacheRecords(env=POPO)
    return OrgDirectory(records, Credentials(env=POPO), ttl=0), records


def events(records: CacheRecords) -> list[str]:
    return [type(records.mapper.to_domain_event(n)).__qualname__
            for n in records.recorder.select_notifications(start=1, limit=100)]


def test_applying_the_same_settings_twice_records_nothing_the_second_time():
    orgs, records = directory()
    assert orgs.apply("hub", {"upstream": "docker.io"}) is True
    assert orgs.apply("hub", {"upstream": "docker.io"}) is False
    assert events(records) == ["CacheOrg.Registered"]


def test_changed_settings_record_one_reconfiguration_with_only_the_changes():
    orgs, records = directory()
    orgs.apply("hub", {"upstream": "docker.io"})
    orgs.apply("hub", {"upstream": "docker.io", "staleness_seconds": 60})
    assert events(records) == ["CacheOrg.Registered", "CacheOrg.Reconfigured"]
    last = records.mapper.to_domain_event(records.recorder.select_notifications(start=2, limit=1)[0])
    assert last.changes == {"staleness_seconds": 60}
    assert orgs.get("hub").staleness_seconds == 60


def test_a_password_change_alone_is_a_change_but_never_an_event_of_the_cache_records():
    orgs, records = directory()
    orgs.apply("priv", {"upstream": "https://r.example", "username": "u", "password": "one"})
    assert orgs.apply("priv", {"upstream": "https://r.example", "username": "u", "password": "two"}) is True
    assert orgs.get("priv").password == "two"
    assert events(records) == ["CacheOrg.Registered"]


@pytest.mark.parametrize("settings", [
    {"upstream": ""}, {"upstream": "ftp://x"}, {"upstream": "https://x/path"},
    {"upstream": "docker.io", "staleness_seconds": -1}, {"upstream": "docker.io", "max_stale_seconds": "a"},
    {"upstream": "docker.io", "namespace": "Bad"}, {"upstream": "docker.io", "on_upstream_denied": "maybe"},
])
def test_invalid_settings_are_refused_and_record_nothing(settings):
    orgs, records = directory()
    with pytest.raises(InvalidOrgSettings):
        orgs.apply("hub", settings)
    assert events(records) == []


@pytest.mark.parametrize("name", ["Hub", "a/b", "", "-x"])
def test_invalid_org_names_are_refused(name):
    orgs, _ = directory()
    with pytest.raises(InvalidOrgSettings):
        orgs.apply(name, {"upstream": "docker.io"})


def test_docker_hub_aliases_and_schemes_are_normalized():
    assert normalize_upstream("docker.io") == DOCKER_HUB_URL
    assert normalize_upstream("https://index.docker.io/") == DOCKER_HUB_URL
    assert normalize_upstream("quay.io") == "https://quay.io"
    assert normalize_upstream("http://127.0.0.1:5001") == "http://127.0.0.1:5001"


def test_one_word_docker_hub_names_mean_library_and_namespaces_are_prefixed():
    assert upstream_repository(DOCKER_HUB_URL, "", "postgres") == "library/postgres"
    assert upstream_repository(DOCKER_HUB_URL, "", "bitnami/redis") == "bitnami/redis"
    assert upstream_repository(DOCKER_HUB_URL, "library", "postgres") == "library/postgres"
    assert upstream_repository("https://quay.io", "", "app") == "app"
    assert upstream_repository("https://ghcr.io", "org", "tool") == "org/tool"


def test_two_writers_registering_the_same_org_at_once_both_succeed_and_it_is_registered_once():
    orgs, records = directory()
    original_get = records.repository.get
    raced = {"done": False}

    def get_racing_another_replica(aggregate_id, *args, **kwargs):
        if not raced["done"]:
            # Our read finds nothing; another replica registers the org before our write.
            raced["done"] = True
            records.save(CacheOrg(name="hub", settings=normalize_settings({"upstream": "docker.io"})))
            raise AggregateNotFoundError(aggregate_id)
        return original_get(aggregate_id, *args, **kwargs)

    records.repository.get = get_racing_another_replica
    assert orgs.apply("hub", {"upstream": "docker.io"}) is False
    assert events(records) == ["CacheOrg.Registered"]


def test_a_deleted_orgs_name_taken_again_is_the_next_generation_with_the_settings_given_whole():
    orgs, records = directory()
    orgs.apply("team", {"upstream": "docker.io", "staleness_seconds": 5})
    assert orgs.get("team").generation == 1
    assert orgs.delete("team") and orgs.get("team") is None
    orgs.apply("team", {"upstream": "docker.io"})
    again = orgs.get("team")
    assert (again.generation, again.staleness_seconds) == (2, OrgSettingsDefaults.staleness_seconds)
    assert events(records) == ["CacheOrg.Registered", "CacheOrg.Deleted", "CacheOrg.Recreated"]
    assert records.get_org("team").generation == 2


def test_an_org_re_created_before_generations_existed_stays_in_its_generation():
    # Then a re-creation was a Reconfigured after the Deleted, allowed only when the old org had left nothing.
    records = CacheRecords(env=POPO)
    org = CacheOrg(name="team", settings=normalize_settings({"upstream": "docker.io"}))
    org.delete()
    org._reconfigured(name="team", changes={})
    records.save(org)
    assert records.get_org("team").generation == 1 and not records.get_org("team").deleted
