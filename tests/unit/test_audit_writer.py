"""`entrepot audit` output: the table's NOTE column and the CSV columns, from rows as the admin API sends them."""

from __future__ import annotations

import csv
import io

from interfaces.cli_output import AuditWriter


def row(**fields) -> dict:
    base = {"id": 1, "at": "2026-01-31T12:00:00.000Z", "org": "hub", "repository": "library/alpine",
            "reference": "3.19", "digest": "", "result": "hit", "client": "10.0.0.1", "user_agent": "podman/5.0",
            "status": 200, "error_code": "", "note": ""}
    return {**base, **fields}


def written(format: str, rows: list[dict]) -> str:
    out = io.StringIO()
    writer = AuditWriter(format, out)
    writer.write(rows)
    writer.close()
    return out.getvalue()


def test_the_table_shows_an_errors_status_and_code_and_a_stale_serves_reason_in_a_short_note_column():
    lines = written("table", [
        row(result="error", status=404, error_code="MANIFEST_UNKNOWN", note="manifest x is unknown upstream"),
        row(result="stale", note="upstream unavailable (503): down; serving the cached copy"),
        row()]).splitlines()
    assert lines[0].split()[-3:] == ["NOTE", "USER", "AGENT"]
    assert "404 MANIFEST_UNKNOWN: manif… " in lines[1]   # cut to its width
    assert "upstream unavailable (503)" in lines[2]
    assert lines[1].endswith("podman/5.0") and lines[3].endswith("podman/5.0")   # the user agent is never cut


def test_rows_from_a_server_without_the_note_columns_still_print():
    old = {key: value for key, value in row().items() if key not in ("status", "error_code", "note")}
    assert written("table", [old]).splitlines()[1].endswith("podman/5.0")


def test_csv_has_the_status_error_code_and_note_columns():
    exported = list(csv.DictReader(io.StringIO(written("csv", [row(result="error", status=429,
                                                                    error_code="TOOMANYREQUESTS", note="slow down")]))))
    assert (exported[0]["status"], exported[0]["error_code"], exported[0]["note"]) == ("429", "TOOMANYREQUESTS",
                                                                                       "slow down")
