"""`python -m bench.cold`: one cold client through two revisions of Entrepôt against a direct pull, alternating.

    .venv/bin/python -m bench.cold --before 9ce4b08 --rounds 7 --label fill

The issue's "one cold client within 1.3x a direct pull from the upstream", isolated from the rest of
bench/run so the fill path can be compared before and after a change in one run. Each round pushes a
fresh multi-arch image (`--layers` x `--layer-mib`), then pulls it once straight from the upstream and
once, cold, through each revision (the order rotates every round), as bench/run's cold_1_client does:
`GET /v2/`, the tag, the platform manifest, then the config and layers with one `curl --parallel`.
Prints every sample with the load average and the serving process's CPU time (steadier than wall time on
a shared machine), how long its main thread (Entrepôt's event loop) ran and waited for a CPU, the medians
and the ratios to the direct pull, and the median of each of the client's steps (its setup, /v2/, the
tag, the platform manifest, the blobs) per side; writes JSON (never over an earlier file).

`--upstream-mbit N` holds what every registry sends (the direct one, and each revision's upstream) to N
Mbit/s each (bench/shaping.py, needs root): an upstream a network away, as Docker Hub is, instead of one
on the same two cores.

`--warm-memory-mib N` touches and frees N MiB before each pull (bench/machine.py warm_memory): on this VM the
first write to a page the host has taken back costs a host fault, which a cache pays for every byte it
stores and a direct pull never does; warming models a long-running host, whose new pages are recycled.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench import machine, measure
from bench.ab import checkout, cpu_seconds, server
from bench.images import Pusher, push_image
from bench.shaping import shaped_ports
from bench.targets import ORG, DockerRegistry, Target
from tests.support.server import REPO_ROOT

MIB = 2**20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cold", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", help="git revision measured as 'before' (default: none, only --after)")
    p.add_argument("--after", default=".", help="git revision measured as 'after'; '.' = this checkout as it is")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--layers", type=int, default=6, help="layers per image (bench/run full: 6)")
    p.add_argument("--layer-mib", type=float, default=4, help="MiB per layer (bench/run full: 4)")
    p.add_argument("--engine", default="granian", choices=("granian", "uvicorn"))
    p.add_argument("--upstream-mbit", type=float,
                   help="hold what each registry sends to this many Mbit/s (tc on loopback; needs root)")
    p.add_argument("--warm-memory-mib", type=int, default=0,
                   help="before each pull, touch and free this many MiB, so the pull's new pages are ones the "
                        "hypervisor backs, as on a long-running host (bench/machine.py warm_memory; 0: off)")
    p.add_argument("--label", default="cold", help="names the output: bench/results/<date>-cold-<label>.json")
    o = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    revisions = [checkout("after", o.after)] + ([checkout("before", o.before)] if o.before else [])
    for r in revisions:
        say(f"{r.side}: {r.commit}{' (dirty)' if r.dirty else ''} {r.subject[:70]}")
    load_before = machine.load()
    work = Path(tempfile.mkdtemp(prefix="entrepot-cold-"))
    sides = ["direct"] + [r.side for r in revisions]
    samples: dict[str, list[dict]] = {side: [] for side in sides}
    try:
        with ExitStack() as stack:
            storage = work / "storage"
            direct = stack.enter_context(DockerRegistry(work / "direct", storage, access_log=False))
            pusher = Pusher(direct.url)
            stack.callback(pusher.close)
            targets = {"direct": Target("direct", direct.url, pid=direct.pid)}
            registries = [direct]   # what the direct pull and each revision's fills come from
            for r in revisions:   # each revision fetches from its own registry process over the same storage
                behind = stack.enter_context(DockerRegistry(work / f"up-{r.side}", storage, access_log=False))
                registries.append(behind)
                s = stack.enter_context(server(r, work / r.side, behind.url, o.engine))
                targets[r.side] = Target(r.side, s.url, f"{ORG}/", s.process.pid)
            if o.upstream_mbit:
                stack.enter_context(shaped_ports([registry.port for registry in registries], o.upstream_mbit))
            warm = push_image(pusher, work, "bench/warmup", "v1", [MIB] * 2, multi_arch=True)
            for target in targets.values():
                measure.cold_pull(target, warm, 1)
            pids = [t.pid for t in targets.values() if t.pid]
            for number in range(o.rounds):
                image = push_image(pusher, work, f"bench/cold-{number}", "v1",
                                   [int(o.layer_mib * MIB)] * o.layers, multi_arch=True)
                order = sides[number % len(sides):] + sides[:number % len(sides)]
                for side in order:
                    machine.warm_memory(o.warm_memory_mib)
                    machine.wait_idle(pids)
                    pid = targets[side].pid
                    cpu_before = cpu_seconds(pid)
                    main_before, all_before = machine.scheduled(pid, pid), machine.scheduled(pid)
                    result = measure.cold_pull(targets[side], image, 1)
                    # CPU of the serving process (Entrepôt, or the registry for "direct"), every thread:
                    # steadier than wall time on a shared machine, and it is what the load multiplies.
                    cpu = cpu_seconds(pid) - cpu_before
                    # Where the serving side's time went: its main thread (Entrepôt's event loop) ran, or
                    # waited for a CPU; and the same summed over every thread of the process.
                    main_after, all_after = machine.scheduled(pid, pid), machine.scheduled(pid)
                    sample = {"round": number, "seconds": result["seconds"], "cpu_seconds": cpu, "load": machine.load(),
                              "phases": result.get("phases", {}),
                              "main_thread_run_seconds": main_after[0] - main_before[0],
                              "main_thread_wait_seconds": main_after[1] - main_before[1],
                              "threads_run_seconds": all_after[0] - all_before[0],
                              "threads_wait_seconds": all_after[1] - all_before[1]}
                    samples[side].append(sample)
                    say(f"round {number} {side:<7} {result['seconds'] * 1000:7.1f} ms  cpu {cpu * 1000:5.0f} ms  "
                        f"main thread ran {sample['main_thread_run_seconds'] * 1000:4.0f} ms, waited "
                        f"{sample['main_thread_wait_seconds'] * 1000:4.0f} ms for a CPU  load {sample['load']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {side: statistics.median(s["seconds"] for s in runs) for side, runs in samples.items()}
    ratios = {side: medians[side] / medians["direct"] for side in sides if side != "direct"}
    cpu = {side: statistics.median(s["cpu_seconds"] for s in runs) for side, runs in samples.items()}
    scheduling = {side: {key: statistics.median(s[key] for s in runs)
                         for key in ("main_thread_run_seconds", "main_thread_wait_seconds", "threads_run_seconds",
                                     "threads_wait_seconds")}
                  for side, runs in samples.items()}
    print(f"\nmedians of {o.rounds} cold pulls of {o.layers} x {o.layer_mib:g} MiB "
          f"(load {load_before} -> {machine.load()}):")
    for side in sides:
        ratio = f"  {ratios[side]:.2f}x direct" if side in ratios else ""
        print(f"{side:<7} {medians[side] * 1000:7.1f} ms{ratio}   server CPU {cpu[side] * 1000:5.0f} ms; main thread "
              f"ran {scheduling[side]['main_thread_run_seconds'] * 1000:4.0f} ms, waited "
              f"{scheduling[side]['main_thread_wait_seconds'] * 1000:4.0f} ms for a CPU; every thread waited "
              f"{scheduling[side]['threads_wait_seconds'] * 1000:4.0f} ms")
    # The client's steps (its setup, /v2/, the tag, the platform manifest, the blobs): where a side's
    # time goes against the direct pull's.
    phases = {side: {step: statistics.median(s["phases"][step] for s in runs) for step in runs[0]["phases"]}
              for side, runs in samples.items() if runs and all(s["phases"] for s in runs)}
    for side, steps in phases.items():
        shown = ", ".join(f"{step} {seconds * 1000:.1f}" for step, seconds in steps.items())
        print(f"{side:<7} steps: {shown} ms")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine.machine(), "load_before": load_before, "load_after": machine.load(),
              "params": {"rounds": o.rounds, "layers": o.layers, "layer_mib": o.layer_mib, "engine": o.engine,
                         "upstream_mbit": o.upstream_mbit, "warm_memory_mib": o.warm_memory_mib},
              "revisions": {r.side: {"commit": r.commit, "subject": r.subject, "dirty": r.dirty} for r in revisions},
              "samples": samples, "medians_seconds": medians, "ratio_to_direct": ratios,
              "median_server_cpu_seconds": cpu, "median_scheduling": scheduling, "median_phases_seconds": phases}
    output = REPO_ROOT / "bench" / "results" / f"{datetime.date.today()}-cold-{o.label}.json"
    copy = 2
    while output.exists():   # a label used twice the same day: keep the earlier figures
        output = output.with_name(f"{datetime.date.today()}-cold-{o.label}-{copy}.json")
        copy += 1
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
