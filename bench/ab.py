"""`python -m bench.ab`: warm-pull throughput of two git revisions of Entrepôt, measured in alternation.

    .venv/bin/python -m bench.ab --before e9e23e4 --rounds 5 --seconds 8 --label start

Each revision runs as `entrepot serve` (embedded default, granian) from its own checkout and venv: the
current checkout for `--after .` (the default, uncommitted changes included), otherwise a detached
`git worktree` $TMPDIR/entrepot-ab-<commit> (made once and reused), run with this checkout's venv when
its dependencies are the same, else with its own (set up by its `bin/entrepot`). Both fetch from one
local `docker-registry`. After a warm-up pull, `wrk -t2 -c32` runs against a manifest by tag, a
manifest by digest and a small blob, alternating before and after (the order flips every round, so
a neighbour's load hits both sides alike). Each sample also takes the server's CPU time per request,
counted until it is idle again (so the projections' work on the recorded pulls is in it): on a machine
shared with other work that figure moves far less than requests/s. Prints every sample with the load
average, then medians and ratios; writes everything as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench import machine, measure
from bench.images import Pusher, push_image
from bench.targets import ORG, DockerRegistry, Target
from tests.support.registry import free_port
from tests.support.server import REPO_ROOT, EntrepotServer

KINDS = ("tag", "digest", "blob")


@dataclass
class Revision:
    side: str            # "before" | "after"
    checkout: Path
    python: str          # the interpreter of a venv holding the revision's dependencies
    commit: str
    subject: str
    dirty: bool


def _git(*args: str, cwd: Path = REPO_ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _python_for(path: Path) -> str:
    """This checkout's venv when the revision has the same pyproject.toml (the venv's editable finder
    comes after sys.path, so `python -m` in the revision's directory imports that revision's code);
    otherwise the revision's own venv, set up by its bin/entrepot when missing or out of date."""
    if path == REPO_ROOT or (path / "pyproject.toml").read_bytes() == (REPO_ROOT / "pyproject.toml").read_bytes():
        return sys.executable
    subprocess.run([str(path / "bin" / "entrepot"), "--help"], cwd=path, check=True, capture_output=True)
    return str(path / ".venv" / "bin" / "python")


def checkout(side: str, rev: str, patch: Path | None = None) -> Revision:
    """The current checkout for ".", else a detached worktree of `rev` (made on first use), with `patch`
    applied when given (its own worktree, named after the patch's hash)."""
    if rev == "." and patch is None:
        path = REPO_ROOT
    else:
        commit = _git("rev-parse", "--verify", f"{'HEAD' if rev == '.' else rev}^{{commit}}")
        suffix = f"-{hashlib.sha256(patch.read_bytes()).hexdigest()[:8]}" if patch else ""
        path = Path(tempfile.gettempdir()) / f"entrepot-ab-{commit[:7]}{suffix}"
        if not path.exists():
            _git("worktree", "add", "--detach", str(path), commit)
            if patch is not None:
                _git("apply", str(patch.resolve()), cwd=path)
    python = _python_for(path)
    imported = subprocess.run([python, "-c", "import interfaces; print(interfaces.__file__)"], cwd=path,
                              capture_output=True, text=True, check=True).stdout.strip()
    if not Path(imported).resolve().is_relative_to(path.resolve()):
        raise SystemExit(f"bench.ab: {python} in {path} imports {imported}, not that revision's code")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=path))
    return Revision(side, path, python, _git("rev-parse", "--short", "HEAD", cwd=path),
                    _git("log", "-1", "--format=%s", cwd=path), dirty)


def server(revision: Revision, directory: Path, upstream_url: str, engine: str) -> EntrepotServer:
    org = {"name": ORG, "upstream": upstream_url,
           # generous staleness: a warm pull by tag is a hit, never a revalidation
           "staleness_seconds": 86_400, "max_stale_seconds": 7 * 86_400}
    # A port picked beforehand, not port 0: revisions before 2026-11-29 refuse port 0.
    return EntrepotServer(directory, [org], port=free_port(), startup_timeout=90.0, server={"engine": engine},
                          checkout=revision.checkout, python=revision.python)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used: every thread, the projections' included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summarize(samples: dict) -> dict:
    """Medians per kind and side, and the after/before ratios. On a shared machine CPU per request is the
    steadier figure: requests/s follows what the neighbours do, CPU per request much less."""
    out = {}
    for kind, by_side in samples.items():
        medians = {side: {key: statistics.median(s[key] for s in runs) for key in ("rps", "p50_ms", "p99_ms", "cpu_us")}
                   for side, runs in by_side.items()}
        out[kind] = {"median": medians, "ratio_rps": medians["after"]["rps"] / medians["before"]["rps"],
                     "ratio_p99": medians["after"]["p99_ms"] / medians["before"]["p99_ms"],
                     # before/after: above 1 when the after side needs less CPU per request
                     "ratio_cpu_efficiency": medians["before"]["cpu_us"] / medians["after"]["cpu_us"]}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="e9e23e4", help="git revision measured as 'before' (default e9e23e4)")
    p.add_argument("--after", default=".", help="git revision measured as 'after'; '.' = this checkout as it is")
    p.add_argument("--before-patch", type=Path,
                   help="a patch applied to the 'before' revision (e.g. bench/patches/no-traffic-meter.patch: "
                        "the same code without one part, to measure that part's cost)")
    p.add_argument("--rounds", type=int, default=5, help="wrk runs per kind and side (default 5)")
    p.add_argument("--seconds", type=float, default=8, help="seconds per wrk run (default 8)")
    p.add_argument("--engine", default="granian", choices=("granian", "uvicorn"))
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of tag,digest,blob")
    p.add_argument("--label", default="ab", help="names the output: bench/results/<date>-ab-<label>.json")
    p.add_argument("--output", type=Path, help="JSON output path (default from --label)")
    o = p.parse_args(argv)
    # Stopped with SIGTERM: unwind, so the servers and the registry it started stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    kinds = tuple(k for k in o.kinds.split(",") if k)
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    revisions = (checkout("before", o.before, o.before_patch), checkout("after", o.after))
    for r in revisions:
        say(f"{r.side}: {r.commit}{' (dirty)' if r.dirty else ''} {r.subject[:70]} in {r.checkout}")
    load_before = machine.load()
    work = Path(tempfile.mkdtemp(prefix="entrepot-ab-run-"))
    samples: dict = {kind: {r.side: [] for r in revisions} for kind in kinds}
    try:
        with ExitStack() as stack:
            upstream = stack.enter_context(DockerRegistry(work / "up", work / "storage", access_log=False))
            pusher = Pusher(upstream.url)
            stack.callback(pusher.close)
            image = push_image(pusher, work, "bench/small", "v1", [64 * 1024] * 5)
            targets = {}
            for r in revisions:
                s = stack.enter_context(server(r, work / r.side, upstream.url, o.engine))
                targets[r.side] = Target(r.side, s.url, f"{ORG}/", s.process.pid)
            urls = {side: {"tag": t.manifest_url(image.repository, image.tag),
                           "digest": t.manifest_url(image.repository, image.manifest_digest),
                           "blob": t.blob_url(image.repository, image.largest_layer.digest)}
                    for side, t in targets.items()}
            for side, t in targets.items():   # warm-up: one pull, then a short load of each kind
                measure.cold_pull(t, image, 1)
                for kind in kinds:
                    measure.wrk(urls[side][kind], 1)
            pids = [t.pid for t in targets.values()]
            for number in range(o.rounds):
                order = ("before", "after") if number % 2 == 0 else ("after", "before")
                for kind in kinds:
                    for side in order:
                        waited = machine.wait_idle(pids)
                        cpu = cpu_seconds(targets[side].pid)
                        result = measure.wrk(urls[side][kind], o.seconds)
                        # Until the server is idle again: the projections' work on the pulls it recorded counts too.
                        machine.wait_idle([targets[side].pid])
                        cpu = cpu_seconds(targets[side].pid) - cpu
                        sample = {"round": number, "rps": result["rps"], "p50_ms": result["p50_ms"],
                                  "p99_ms": result["p99_ms"], "cpu_us": 1e6 * cpu / result["requests"],
                                  "load": machine.load(), "idle_wait_s": round(waited, 2)}
                        samples[kind][side].append(sample)
                        say(f"round {number} {kind:<6} {side:<6} {result['rps']:9,.0f} req/s  p99 "
                            f"{result['p99_ms']:6.1f} ms  {sample['cpu_us']:6.0f} µs CPU/req  load {sample['load']}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(samples)
    print(f"\nmedians of {o.rounds} runs of {o.seconds:g} s (load {load_before} -> {machine.load()}):")
    for kind, s in summary.items():
        m = s["median"]
        print(f"{kind:<7} before {m['before']['rps']:9,.0f}  after {m['after']['rps']:9,.0f} req/s  "
              f"after/before {s['ratio_rps']:.2f}x  (p99 {m['before']['p99_ms']:.1f} -> {m['after']['p99_ms']:.1f} ms)  "
              f"CPU/req {m['before']['cpu_us']:.0f} -> {m['after']['cpu_us']:.0f} µs: {s['ratio_cpu_efficiency']:.2f}x")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine.machine(), "load_before": load_before, "load_after": machine.load(),
              "params": {"rounds": o.rounds, "seconds": o.seconds, "engine": o.engine, "connections": 32,
                         "threads": 2, "kinds": list(kinds)},
              "revisions": {r.side: {"commit": r.commit, "subject": r.subject, "dirty": r.dirty} for r in revisions},
              "before_patch": str(o.before_patch) if o.before_patch else None,
              "samples": samples, "summary": summary}
    output = o.output or REPO_ROOT / "bench" / "results" / f"{datetime.date.today()}-ab-{o.label}.json"
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
