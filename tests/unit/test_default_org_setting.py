"""The config file may mark at most one organization as the default for root paths."""

from __future__ import annotations

import pytest

from infra.settings import SettingsError, load_settings


def test_two_default_organizations_in_the_config_file_are_refused(tmp_path):
    config = tmp_path / "entrepot.toml"
    config.write_text('[[organizations]]\nname = "hub"\nupstream = "docker.io"\ndefault = true\n\n'
                      '[[organizations]]\nname = "quay"\nupstream = "quay.io"\ndefault = true\n')

    with pytest.raises(SettingsError, match="only one organization may be the default, got hub, quay"):
        load_settings(str(config))


def test_one_default_organization_is_accepted(tmp_path):
    config = tmp_path / "entrepot.toml"
    config.write_text('[[organizations]]\nname = "hub"\nupstream = "docker.io"\ndefault = true\n')

    assert [org.default for org in load_settings(str(config)).organizations] == [True]
