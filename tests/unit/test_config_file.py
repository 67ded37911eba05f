"""The config file is validated whole and strictly: a wrong key or type is one line naming the file and key."""

from __future__ import annotations


import pytest

from infra.settings import SettingsError, load_settings



def config(tmp_path, text: str) -> str:
    path = tmp_path / "entrepot.toml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, message", [
    ('[storage]\nredirect = "no"\n', '[storage] redirect: expected a boolean, got "no"'),
    ('[redis]\nfill_wait_seconds = "soon"\n', '[redis] fill_wait_seconds: expected a number, got "soon"'),
    ('[server]\nport = "abc"\n', '[server] port: expected an integer, got "abc"'),
    ('[server]\nport = 70000\n', "[server] port: expected an integer <= 65535, got 70000"),
    ('[upstream]\nread_timeout = -1\n', "[upstream] read_timeout: expected a number >= 0"),
    ('[storage]\nbackend = "gcs"\n', "[storage] backend"),
    ('[storage]\ncolour = "blue"\n', "[storage] unknown key 'colour'"),
    ('[storage]\nmin_free_bytes = 2048\nlow_free_bytes = 1024\n',
     "[storage] low_free_bytes (1024) must be at least min_free_bytes (2048)"),
    ('[cache]\nsize = 1\n', "unknown key 'cache'"),
    ('[analytics]\nminute_days = -1\n', "[analytics] minute_days: expected an integer >= 0, got -1"),
    ('[analytics]\nminute_days = 1.5\n', "[analytics] minute_days: expected an integer"),
    ('[server]\ntrusted_proxies = ["nginx"]\n', "[server] trusted_proxies: 'nginx' is not an IP address"),
    ('[storage]\naccel_redirect = "_entrepot/blobs"\n', "[storage] accel_redirect: expected a string matching"),
    ('[storage]\naccel_redirect = "/blobs/ x/"\n', "[storage] accel_redirect: expected a string matching"),
    ('[storage]\nbackend = "s3"\nbucket = "b"\naccel_redirect = "/_entrepot/blobs/"\n',
     "[storage] accel_redirect needs backend 'filesystem' (with s3, use redirect = true)"),
    ('[[organizations]]\nname = "hub"\nupstream = "docker.io"\nstaleness_seconds = "5"\n',
     '[[organizations]] 0 (hub) staleness_seconds: expected an integer, got "5"'),
    ('[[organizations]]\nname = "hub"\nupstream = "docker.io"\nmax_stale_seconds = 1000000000000\n',
     "[[organizations]] 0 (hub) max_stale_seconds: expected an integer <= 315360000"),
    ('[[organizations]]\nname = "hub"\nupstream = "ftp://x"\n', "[[organizations]] 0 (hub) upstream: must be"),
    ('[[organizations]]\nname = "metrics"\nupstream = "docker.io"\n', "'metrics' is reserved"),
    ('[[organizations]]\nname = "hub"\nupstream = "docker.io"\ncolour = 1\n',
     "[[organizations]] 0 (hub) unknown key 'colour'"),
])
def test_a_wrong_key_or_type_is_one_line_naming_the_file_and_the_key(tmp_path, text, message):
    with pytest.raises(SettingsError) as raised:
        load_settings(config(tmp_path, text))
    assert str(raised.value).startswith(f"{tmp_path / 'entrepot.toml'}: "), str(raised.value)
    assert message in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


def test_minute_buckets_are_kept_two_weeks_by_default_and_the_setting_reaches_every_view(tmp_path):
    from infra.persistence import event_store_env
    assert load_settings(config(tmp_path, "")).analytics.minute_days == 14
    settings = load_settings(config(tmp_path, "[analytics]\nminute_days = 0\n"), data_dir=str(tmp_path / "d"))
    assert settings.analytics.minute_days == 0
    assert event_store_env(settings)["ANALYTICS_MINUTE_DAYS"] == "0"


def test_integers_are_accepted_for_seconds_given_as_numbers(tmp_path):
    settings = load_settings(config(tmp_path, "[redis]\nfill_wait_seconds = 5\n[upstream]\nread_timeout = 2.5\n"))
    assert (settings.redis.fill_wait_seconds, settings.upstream.read_timeout) == (5, 2.5)


def test_environment_and_command_line_override_the_file(tmp_path, monkeypatch):
    path = config(tmp_path, '[server]\nhost = "0.0.0.0"\nport = 6000\nadmin_token = "file"\nsecret_key = "file"\n')
    monkeypatch.setenv("ENTREPOT_ADMIN_TOKEN", "env-token")
    monkeypatch.setenv("ENTREPOT_SECRET_KEY", "env-key")
    monkeypatch.setenv("ENTREPOT_CONFIG", path)
    settings = load_settings(None, host="127.0.0.2", port=7000, data_dir=str(tmp_path / "d"))
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.2", 7000, str(tmp_path / "d"))
    assert (settings.admin_token, settings.secret_key) == ("env-token", "env-key")
    assert load_settings(None).port == 6000


def test_no_file_means_the_defaults_with_the_hub_org(monkeypatch):
    monkeypatch.delenv("ENTREPOT_CONFIG", raising=False)
    settings = load_settings(None)
    assert [org.name for org in settings.organizations] == ["hub"] and settings.storage.redirect is False


def test_accel_redirect_is_off_by_default_and_takes_an_internal_location(tmp_path):
    assert load_settings(config(tmp_path, "")).storage.accel_redirect == ""
    settings = load_settings(config(tmp_path, '[storage]\naccel_redirect = "/_entrepot/blobs/"\n'))
    assert settings.storage.accel_redirect == "/_entrepot/blobs/"
