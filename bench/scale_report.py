"""The markdown summary of a bench.scale run: each large-store figure next to the empty store's."""

from __future__ import annotations


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def markdown(document: dict) -> str:
    shape = document["shape"]
    lines = [f"# Scale: {shape['pulls']:,} pulls, {shape['images']:,} images, {shape['orgs']} orgs, "
             f"{shape['clients']} clients", "",
             f"Machine `{document['machine']}`, {document['cores']} cores, Python {document['python']}; load average "
             f"{_load(document['load_before'])} before, {_load(document['load_after'])} after."
             + (" Scaled down: fewer than 10M pulls." if document["scaled_down"] else "")
             + (" **Measured as built**: the build was stopped before every view was rebuilt (see the build table;"
                " a view left behind catches up while the servers run, and /readyz may say degraded)."
                if document.get("as_built") else ""), ""]
    for result in document["results"]:
        large, empty, build = result["large"], result["empty"], result["build"]
        lines += [f"## {result['backend']}", "", "| figure | large store | empty store | ratio |", "|---|---|---|---|"]
        lines.append(f"| event store on disk | {_mib(large['sizes']['event_store_bytes'])} | "
                     f"{_mib(empty['sizes']['event_store_bytes'])} | |")
        lines.append(f"| views on disk | {_mib(large['sizes']['views_bytes'])} | {_mib(empty['sizes']['views_bytes'])} | |")
        lines.append(f"| serve → /readyz | {large['serve_to_ready_s']} s | {empty['serve_to_ready_s']} s | |")
        lines.append(f"| idle RSS | {large['idle_rss_mib']} MiB | {empty['idle_rss_mib']} MiB | |")
        for key, label in (("by_tag", "warm manifest by tag"), ("by_digest", "warm manifest by digest")):
            a, b = large["warm"][key], empty["warm"][key]
            lines.append(f"| {label} | {a['rps']:,.0f} req/s (p99 {a['p99_ms']:.1f} ms) | {b['rps']:,.0f} req/s "
                         f"(p99 {b['p99_ms']:.1f} ms) | {result['warm_ratio'][key]:.2f}x (target ≥ 0.9x) |")
        a, b = large["many_clients"], empty["many_clients"]
        lines.append(f"| {a['clients']} clients by tag | {a['rps']:,.0f} req/s, {a['errors']} errors, p99 "
                     f"{a['p99_ms']:.0f} ms, peak RSS {a['peak_rss_mib']} MiB | {b['rps']:,.0f} req/s, {b['errors']} "
                     f"errors, p99 {b['p99_ms']:.0f} ms, peak RSS {b['peak_rss_mib']} MiB | |")
        lines += ["", "Load average at the large store's start / end: "
                  f"{_load(large['load_at_start'])} / {_load(large['load_at_end'])}.", "",
                  "| admin query | p50 | p99 | answer | rows/s |", "|---|---|---|---|---|"]
        for name, figures in large.get("admin", {}).items():
            if "rows_per_s" in figures:
                lines.append(f"| {name} ({figures['rows']:,} rows) | | | | {figures['rows_per_s']:,} |")
            else:
                lines.append(f"| {name} | {figures['p50_ms']} ms | {figures['p99_ms']} ms | {figures['bytes']:,} B | |")
        lines += ["", "| building the history | events | seconds | events/s |", "|---|---|---|---|"]
        for part, figures in (build.get("write") or {}).items():
            lines.append(f"| write {part} (application write path) | {figures['events']:,} | {figures['seconds']} | "
                         f"{figures['events_per_s']:,} |")
        for name, figures in build["rebuild"].items():
            what = name if name.startswith("one pass") else f"view {name}"   # bench.scale: the pass, then each view
            lines.append(f"| rebuild {what} | {figures['events']:,} | {figures['seconds']} | "
                         f"{figures['events_per_s']:,} |")
        lines += [f"", f"Load average after the build: {_load(build.get('load', [0, 0, 0]))}.", ""]
        lines += _sizes(large["sizes"], shape)
    return "\n".join(lines) + "\n"


PER_PULL = ("pulls", "audit", "counters", "analytics", "chain")   # files and tables fed by pull events (a link each)


def _sizes(sizes: dict, shape: dict) -> list[str]:
    """Each file or table of the large store, per pull (pull-fed) or per image (the rest)."""
    parts = sizes.get("files") or sizes.get("tables") or {}
    lines = ["| on disk (large store) | bytes | per pull | per image |", "|---|---|---|---|"]
    per_pull = per_image = 0
    for name, size in sorted(parts.items(), key=lambda item: -item[1]):
        if size < 1 << 20:
            continue
        if any(word in name for word in PER_PULL):
            per_pull += size
            lines.append(f"| {name} | {_mib(size)} | {size / shape['pulls']:,.0f} B | |")
        else:
            per_image += size
            lines.append(f"| {name} | {_mib(size)} | | {size / shape['images']:,.0f} B |")
    lines.append(f"| **total** | {_mib(per_pull + per_image)} | **{per_pull / shape['pulls']:,.0f} B** | "
                 f"**{per_image / shape['images']:,.0f} B** |")
    return lines + [""]


def _load(values) -> str:
    return " ".join(f"{v:.2f}" for v in values)
