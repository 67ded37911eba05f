"""Issue 13's analytics query latency on a history bench.scale built (its analytics view as the rebuild made it).

    .venv/bin/python -m bench.scale_analytics DATA_DIR_OF_A_SCALE_STORE [--queries 100] [--json FILE]

The store's own config (entrepot.toml) says which backend; `end` is the history's last pull.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.analytics import query_latencies
from bench.scale_history import org_name
from infra.persistence import event_store_env
from infra.projection_runtime import open_view
from infra.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="a bench.scale store directory (with entrepot.toml and progress.json)")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--json")
    args = parser.parse_args()
    store = Path(args.store)
    progress = json.loads((store / "progress.json").read_text())
    settings = load_settings(str(store / "entrepot.toml"))
    env = event_store_env(settings)
    backend = "postgres" if settings.database.url else "sqlite"
    view = open_view("analytics", env)
    load_before = os.getloadavg()
    try:
        rows = query_latencies(view, backend, [org_name(o) for o in range(progress["shape"]["orgs"])],
                               progress["end"], args.queries)
    finally:
        view.close()
    document = {"benchmark": "bench.scale_analytics", "store": store.name, "shape": progress["shape"],
                "load_before": load_before, "load_after": os.getloadavg(), "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
