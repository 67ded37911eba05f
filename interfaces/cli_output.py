"""Readable tables for the admin commands, and the audit writer that streams table, JSON Lines or CSV."""

from __future__ import annotations

import csv
import json
from typing import TextIO

from domain.org_settings import SETTINGS

AUDIT_COLUMNS = ("id", "at", "org", "repository", "reference", "digest", "result", "client", "actor", "user_agent", "status",
                 "error_code", "note")


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    lines = [headers, *rows]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
                     for line in lines)


def human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def setting_text(key: str, value) -> str:
    """One rendering of a setting wherever it is printed: `yes`/`no`, `300s`, `-` for an empty one."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):   # repository patterns: an empty allow list allows any repository
        return ", ".join(value) or ("any" if key == "allow" else "none")
    if key.endswith("_seconds"):
        return f"{value}s"
    if value in ("", None):
        return "-"
    return str(value)


def _upstream_user(org: dict) -> str:
    return setting_text("username", org["username"]) + (" (password set)" if org["password_set"] else "")


def print_orgs(orgs: list[dict], title: str | None = None) -> None:
    if title:
        print(title)
    if not orgs:
        print("no organizations")
        return
    columns = ("upstream", "namespace", "default", "staleness_seconds", "max_stale_seconds")
    rows = [[org["name"], *(setting_text(key, org[key]) for key in columns), _upstream_user(org)] for org in orgs]
    print(table(rows, ["NAME", "UPSTREAM", "NAMESPACE", "DEFAULT", "STALENESS", "MAX STALE", "UPSTREAM USER"]))


def print_org(details: dict) -> None:
    org = details["organization"]
    lines = [("organization", org["name"])]
    lines += [(key.replace("_", " "), setting_text(key, org.get(key))) for key in SETTINGS if key != "username"]
    lines.append(("upstream user", _upstream_user(org)))
    lines.append(("bytes stored", f"{human_bytes(details['bytes_stored'])} in {details['blob_count']} blobs"))
    lines.append(("cached tags", f"{details['tag_count']} in {details['repository_count']} repositories"))
    pulls = details.get("pulls") or {}
    lines.append(("pulls", ", ".join(f"{n} {result}" for result, n in sorted(pulls.items())) or "none"))
    lines.append(("upstream rate limit", _rate_limit(details.get("upstream_rate_limit"))))
    width = max(len(label) for label, _ in lines) + 2   # a label never runs into its value
    for label, value in lines:
        print(f"{label:<{width}}{value}")


def print_cached_tags(tags: list[dict]) -> None:
    rows = [[tag["repository"], tag["tag"], tag["digest"][:19]] for tag in tags]
    print(table(rows, ["REPOSITORY", "TAG", "DIGEST"]) if rows else "no cached tags")


def print_cached_blobs(blobs: list[dict]) -> None:
    rows = [[blob["digest"][:19], blob["repository"], human_bytes(blob["size"] or 0), str(blob["pull_count"])]
            for blob in blobs]
    print(table(rows, ["DIGEST", "REPOSITORY", "SIZE", "PULLS"]) if rows else "no cached blobs")


def _rate_limit(reading: dict | None) -> str:
    if not reading:
        return "no reading yet"
    return f"{reading.get('remaining')} of {reading.get('limit')} left"


class AuditWriter:
    """Writes pages of audit rows as they arrive; a table's widths are fixed so that it can stream."""

    WIDTHS = (8, 24, 10, 28, 16, 11, 15, 28)   # the user agent, last, is not cut

    def __init__(self, format: str, out: TextIO) -> None:
        self.format, self.out, self.count = format, out, 0
        self._csv = csv.DictWriter(out, fieldnames=AUDIT_COLUMNS, extrasaction="ignore", lineterminator="\n")

    def write(self, rows: list[dict]) -> None:
        if self.count == 0:
            self._header()
        for row in rows:
            if self.format == "jsonl":
                self.out.write(json.dumps(row) + "\n")
            elif self.format == "csv":
                self._csv.writerow(row)
            else:
                self._line([row["id"], row["at"], row["org"], row["repository"], row["reference"], row["result"],
                            row["client"], _note(row), row["user_agent"]])
        self.count += len(rows)
        self.out.flush()

    def close(self) -> None:
        if self.count == 0 and self.format == "csv":
            self._header()   # an empty export is still a valid CSV file with its columns
        self.out.flush()

    def _header(self) -> None:
        if self.format == "csv":
            self._csv.writeheader()
        elif self.format == "table":
            self._line(["ID", "TIME", "ORG", "REPOSITORY", "REFERENCE", "RESULT", "CLIENT", "NOTE", "USER AGENT"])

    def _line(self, cells: list) -> None:
        text = "  ".join(_fit(str(cell), width) for cell, width in zip(cells[:-1], self.WIDTHS))
        self.out.write(f"{text}  {cells[-1]}\n")


def _note(row: dict) -> str:
    """An error leads with what the client was answered (404 MANIFEST_UNKNOWN); a stale serve shows why."""
    note = row.get("note") or ""   # .get: a server older than these columns sends none
    if row.get("error_code"):
        return f"{row.get('status')} {row['error_code']}: {note}"
    return note


def _fit(text: str, width: int) -> str:
    return text.ljust(width) if len(text) <= width else text[:width - 1] + "…"


def print_robots(robots: list[dict], title: str | None = None) -> None:
    if title:
        print(title)
    if not robots:
        print("no robots")
        return
    rows = [[robot["username"], robot["role"], ", ".join(robot["repositories"]) or "-",
             "disabled" if robot["disabled"] else "active"] for robot in robots]
    print(table(rows, ["USERNAME", "ROLE", "REPOSITORIES", "STATE"]))


def print_admin_log(items: list[dict]) -> None:
    if not items:
        print("no admin actions")
        return
    rows = [[item["at"], item["actor"], item["action"], item["target"], item["detail"]] for item in items]
    print(table(rows, ["AT", "ACTOR", "ACTION", "TARGET", "DETAIL"]))
