"""[server] engine picks the HTTP server `entrepot serve` runs on."""

from __future__ import annotations

import pytest

from infra.settings import SettingsError, load_settings


def config(tmp_path, text: str) -> str:
    path = tmp_path / "entrepot.toml"
    path.write_text(text)
    return str(path)


def test_the_engine_defaults_to_granian(tmp_path):
    assert load_settings(config(tmp_path, "[server]\nport = 5000\n")).engine == "granian"


def test_uvicorn_can_be_chosen(tmp_path):
    assert load_settings(config(tmp_path, '[server]\nengine = "uvicorn"\n')).engine == "uvicorn"


def test_an_unknown_engine_is_refused_with_the_choices(tmp_path):
    with pytest.raises(SettingsError, match="engine must be one of uvicorn, granian, got 'hypercorn'"):
        load_settings(config(tmp_path, '[server]\nengine = "hypercorn"\n'))
