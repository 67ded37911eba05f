"""Medians, ratios against the peer, the issue's targets with pass/miss, the terminal table and the JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

ENTREPOTS = ("entrepot", "entrepot-pg", "entrepot-nginx")
COLUMNS = ("upstream", "peer", "entrepot", "entrepot-pg", "entrepot-nginx")

# measurement -> (label, metrics shown, the metric ratios are taken of)
MEASUREMENTS = {
    "manifest_by_tag": ("warm manifest GET by tag, 32 conns", ("rps", "p50_ms", "p99_ms"), "rps"),
    "manifest_by_digest": ("warm manifest GET by digest, 32 conns", ("rps", "p50_ms", "p99_ms"), "rps"),
    "blob_1_stream": ("warm blob GET, 1 stream", ("mib_s",), "mib_s"),
    "blob_4_streams": ("warm blob GET, 4 streams", ("mib_s",), "mib_s"),
    "cold_1_client": ("cold pull, 1 client", ("seconds", "upstream_ratio"), "seconds"),
    "cold_20_clients": ("cold pull, N clients", ("seconds", "upstream_ratio"), "seconds"),
    "cold_memory": ("cold big layer, 4 clients", ("peak_rss_mib", "mib_s", "upstream_ratio"), "peak_rss_mib"),
}
UNITS = {"rps": "req/s", "p50_ms": "p50 ms", "p99_ms": "p99 ms", "mib_s": "MiB/s", "seconds": "wall s",
         "upstream_ratio": "upstream/image", "peak_rss_mib": "peak RSS MiB"}


@dataclass(frozen=True)
class Goal:
    """A target from the issue: `metric` of an Entrepôt target, divided by `versus`'s (or absolute)."""

    description: str
    measurement: str
    metric: str
    versus: str | None     # "peer", "upstream", or None for an absolute threshold
    relation: str          # ">=", "<=" or "<"
    threshold: float


GOALS = (
    Goal("warm manifest by tag >= 5x distribution proxy", "manifest_by_tag", "rps", "peer", ">=", 5.0),
    Goal("warm manifest by tag >= 1.0x plain upstream", "manifest_by_tag", "rps", "upstream", ">=", 1.0),
    Goal("warm manifest by digest >= 1.5x distribution proxy", "manifest_by_digest", "rps", "peer", ">=", 1.5),
    Goal("warm blob, 1 stream >= 1.0x distribution proxy", "blob_1_stream", "mib_s", "peer", ">=", 1.0),
    Goal("warm blob, 4 streams >= 1.0x distribution proxy", "blob_4_streams", "mib_s", "peer", ">=", 1.0),
    Goal("cold pull, N clients: upstream bytes / image bytes = 1.0", "cold_20_clients", "upstream_ratio", None,
         "<=", 1.0),
    Goal("cold pull, 1 client: wall <= 1.2x straight from upstream", "cold_1_client", "seconds", "upstream", "<=",
         1.2),
    Goal("peak RSS, 4 clients pulling a big layer cold < 300 MB", "cold_memory", "peak_rss_mib", None, "<",
         300e6 / 2**20),
)
_TOLERANCE = 1e-3  # "= 1.0" for a byte ratio: rounding of manifest sizes aside


def medians(rounds: dict[str, dict[str, list[dict]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict = {}
    for measurement, by_target in rounds.items():
        for target, samples in by_target.items():
            good = [s for s in samples if "error" not in s]
            if not good:
                continue
            metrics = {key for sample in good for key, value in sample.items() if isinstance(value, (int, float))}
            out.setdefault(measurement, {})[target] = {
                key: statistics.median(s[key] for s in good if key in s) for key in sorted(metrics)}
    return out


def ratios(med: dict) -> dict[str, dict[str, dict[str, float]]]:
    """Entrepôt / peer and Entrepôt / upstream for every metric both sides have."""
    out: dict = {}
    for measurement, by_target in med.items():
        for ours in ENTREPOTS:
            for theirs in ("peer", "upstream"):
                if ours in by_target and theirs in by_target:
                    pair = {key: by_target[ours][key] / by_target[theirs][key] for key in by_target[ours]
                            if by_target[theirs].get(key)}
                    out.setdefault(measurement, {})[f"{ours}/{theirs}"] = pair
    return out


def evaluate(med: dict, notes: dict[str, str]) -> list[dict]:
    verdicts = []
    for goal in GOALS:
        for ours in ENTREPOTS:
            by_target = med.get(goal.measurement, {})
            if ours not in by_target:
                continue
            value = by_target[ours].get(goal.metric)
            if goal.versus is not None:
                base = by_target.get(goal.versus, {}).get(goal.metric)
                value = value / base if value is not None and base else None
            if value is None:
                status = "n/a"
            elif goal.relation == ">=":
                status = "pass" if value >= goal.threshold else "miss"
            elif goal.relation == "<=":
                status = "pass" if value <= goal.threshold + (_TOLERANCE if goal.versus is None else 0) else "miss"
            else:
                status = "pass" if value < goal.threshold else "miss"
            verdicts.append({**asdict(goal), "target": ours, "value": value, "status": status,
                             "note": notes.get(goal.measurement, "")})
    return verdicts


def _fmt(value: float | None, metric: str = "") -> str:
    if value is None:
        return "-"
    if metric in ("upstream_ratio",) or abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def table(result: dict) -> str:
    med, rat, labels = result["medians"], result["ratios"], result["labels"]
    columns = [c for c in COLUMNS if c in result["targets_run"]]
    widths = {c: max(13, len(c) + 2) for c in columns}
    head = f"{'measurement':<40}{'metric':<16}" + "".join(f"{c:>{widths[c]}}" for c in columns)
    ratio_columns = [f"{e}/peer" for e in ENTREPOTS if e in columns]
    head += "".join(f"{c:>{max(18, len(c) + 2)}}" for c in ratio_columns)
    lines = [head, "-" * len(head)]
    for measurement, (label, metrics, _) in MEASUREMENTS.items():
        if measurement not in med:
            continue
        for number, metric in enumerate(metrics):
            row = f"{(labels.get(measurement, label) if number == 0 else ''):<40}{UNITS[metric]:<16}"
            row += "".join(f"{_fmt(med[measurement].get(c, {}).get(metric), metric):>{widths[c]}}" for c in columns)
            for ratio in ratio_columns:
                value = rat.get(measurement, {}).get(ratio, {}).get(metric)
                row += f"{f'{value:.2f}x' if value is not None else '-':>{max(18, len(ratio) + 2)}}"
            lines.append(row)
    lines += ["", f"{'target (from issue 6)':<62}{'who':<14}{'value':>10}  result"]
    for verdict in result["verdicts"]:
        value = "-" if verdict["value"] is None else (
            f"{verdict['value']:.2f}" + ("x" if verdict["versus"] else ""))
        note = f"  ({verdict['note']})" if verdict["note"] else ""
        lines.append(f"{verdict['description']:<62}{verdict['target']:<14}{value:>10}  {verdict['status'].upper()}"
                     f"{note}")
    busy: dict[str, list[float]] = {}
    for wait in result.get("idle_waits", []):
        busy.setdefault(wait["after"], []).append(wait["seconds"])
    for after, seconds in busy.items():  # work a server kept doing after its clients were done
        lines.append(f"still busy after {after}: waited {max(seconds):.1f} s (max of {len(seconds)}) before the next")
    for target, reason in result.get("skipped", {}).items():
        lines.append(f"skipped {target}: {reason}")
    for failure in result.get("failures", []):
        lines.append(f"failed: {failure}")
    return "\n".join(lines)


def write_json(result: dict, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{result['started'][:10]}-{result['machine']['host']}"
    path = directory / f"{stem}.json"
    number = 2
    while path.exists():  # a second run the same day keeps the first
        path = directory / f"{stem}-{number}.json"
        number += 1
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    return path
