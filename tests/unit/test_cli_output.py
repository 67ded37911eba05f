"""What the CLI prints: `entrepot --version`, and one rendering of org settings in `org list` and `org show`."""

from __future__ import annotations

from importlib import metadata

import pytest

from domain.org_settings import DEFAULTS
from interfaces.cli import main
from interfaces.cli_output import print_org, print_orgs


def org(**changes) -> dict:
    return {"name": "local", **DEFAULTS.as_event(), "password_set": False, **changes}


def details(**changes) -> dict:
    return {"organization": org(**changes), "bytes_stored": 0, "blob_count": 0, "pulls": {}, "tag_count": 0,
            "repository_count": 0, "upstream_rate_limit": None}


def test_version_flag_prints_the_installed_version(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out == f"entrepot {metadata.version('entrepot')}\n"


def test_org_show_separates_every_label_from_its_value(capsys):
    print_org(details(negative_cache_seconds=30))
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split() == ["negative", "cache", "seconds", "30s"] for line in lines)
    values = {line[:24].strip(): line[24:] for line in lines if line and not line.startswith(" ")}
    assert values["negative cache seconds"] == "30s"


def test_org_list_and_org_show_render_each_setting_the_same_way(capsys):
    print_orgs([org(default=False, namespace="")])
    listed = capsys.readouterr().out.splitlines()[1].split()
    print_org(details(default=False, namespace=""))
    shown = {" ".join(line.split()[:-1]): line.split()[-1] for line in capsys.readouterr().out.splitlines()
             if line.strip() and len(line.split()) >= 2}
    # NAME UPSTREAM NAMESPACE DEFAULT STALENESS MAX-STALE UPSTREAM-USER
    assert listed == ["local", "https://registry-1.docker.io", "-", "no", "300s", "604800s", "-"]
    assert shown["namespace"] == "-" and shown["default"] == "no"
    assert shown["staleness seconds"] == "300s" and shown["max stale seconds"] == "604800s"
    print_orgs([org(default=True, username="bob", password_set=True)])
    assert capsys.readouterr().out.splitlines()[1].split()[3:] == ["yes", "300s", "604800s", "bob", "(password",
                                                                  "set)"]
