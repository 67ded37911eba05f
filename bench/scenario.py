"""The benchmark run: start everything on loopback, warm it, measure every target round by round, tear down."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx

from bench import machine, measure, memory, report
from bench.images import DOCKER_MANIFEST, BenchImage, Pusher, push_image
from bench.postgres import FreshDatabase, reachable
from tests.support.nginx import ACCEL_LOCATION, Nginx
from bench.targets import (ORG, AccessLog, DockerRegistry, Target, database_url_supported, entrepot_server,
                           projection_runner)

MIB = 2**20


@dataclass(frozen=True)
class Options:
    profile: str
    rounds: int
    wrk_seconds: float
    blob_seconds: float
    blob_mib: float
    small_layers: int
    small_layer_kib: int
    cold_layers: int
    cold_layer_mib: float
    cold_clients: int
    memory_layer_mib: float          # 0: no memory measurement
    memory_clients: int
    postgres: bool
    postgres_url: str
    cold_client: str                 # "curl" or "skopeo"
    work_dir: Path | None
    keep: bool
    engine: str                      # [server] engine of both Entrepôt targets: "uvicorn" or "granian"
    warmup_wrk_seconds: float = 1    # 0: no wrk run before the rounds
    nginx: bool = True               # the entrepot-nginx target (skipped when nginx is not installed)


class Bench:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.started = time.monotonic()
        self.rounds: dict[str, dict[str, list[dict]]] = {}
        self.targets: list[Target] = []
        self.skipped: dict[str, str] = {}
        self.failures: list[str] = []
        self.notes: dict[str, str] = {}
        self.labels: dict[str, str] = {}
        self.servers: dict = {}
        self.asgi_server = "unknown"
        self._database_handle: FreshDatabase | None = None
        self.idle_waits: list[dict] = []   # servers still busy after a measurement (e.g. projections catching up)
        self.last_measured = ""

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    # -- setup -----------------------------------------------------------------------------------
    def run(self) -> dict:
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        load_before = machine.load()
        work = Path(self.options.work_dir or tempfile.mkdtemp(prefix="entrepot-bench-"))
        work.mkdir(parents=True, exist_ok=True)
        try:
            with ExitStack() as stack:
                self._start(work, stack)
                self._measure_all(work)
        finally:
            if not self.options.keep:
                shutil.rmtree(work, ignore_errors=True)
        result = {
            "started": started, "profile": self.options.profile,
            "machine": machine.machine() | {"load_before": load_before, "load_after": machine.load()},
            "versions": machine.versions(self.options.cold_client),
            "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(self.options).items()},
            "targets_run": [t.name for t in self.targets], "skipped": self.skipped, "failures": self.failures,
            "labels": self.labels, "entrepot_asgi_server": self.asgi_server, "idle_waits": self.idle_waits,
            "rounds": self.rounds, "seconds": round(time.monotonic() - self.started, 1),
        }
        result["medians"] = report.medians(self.rounds)
        result["ratios"] = report.ratios(result["medians"])
        result["verdicts"] = report.evaluate(result["medians"], self.notes)
        return result

    def _start(self, work: Path, stack: ExitStack) -> None:
        storage = work / "upstream-storage"  # one copy of the images, read by one registry per target
        direct = DockerRegistry(work / "up-direct", storage, access_log=False)
        behind_peer = DockerRegistry(work / "up-peer", storage, access_log=True)
        peer = DockerRegistry(work / "peer", work / "peer" / "storage", access_log=False, proxy=behind_peer.url)
        behind_ours = DockerRegistry(work / "up-entrepot", storage, access_log=True)
        ours = entrepot_server(work / "entrepot", behind_ours.url, engine=self.options.engine)
        # The peer starts after its remote (it may ask the remote as it starts); the rest at once.
        _start_together(stack, [[direct], [behind_peer, peer], [behind_ours], [ours]])
        self.pusher = Pusher(direct.url)
        stack.callback(self.pusher.close)
        self.targets.append(Target("upstream", direct.url, pid=direct.pid))
        self.targets.append(Target("peer", peer.url, pid=peer.pid, upstream=AccessLog(behind_peer)))
        self.targets.append(Target("entrepot", ours.url, f"{ORG}/", ours.process.pid, AccessLog(behind_ours)))
        self.asgi_server = _asgi_server(ours.log_tail(200))
        self.say(f"started upstream {direct.url}, peer {peer.url}, entrepot {ours.url}")

        self._start_nginx(work, storage, stack)
        database = self._database(stack)
        if database is not None:
            behind_pg = stack.enter_context(DockerRegistry(work / "up-entrepot-pg", storage, access_log=True))
            try:
                on_pg = stack.enter_context(entrepot_server(work / "entrepot-pg", behind_pg.url, database.url,
                                                            engine=self.options.engine))
                stack.enter_context(projection_runner(on_pg))
                self.servers["entrepot-pg"] = on_pg
                self.targets.append(Target("entrepot-pg", on_pg.url, f"{ORG}/", on_pg.process.pid,
                                           AccessLog(behind_pg)))
                self.say(f"started entrepot-pg {on_pg.url} on database {database.name}")
            except RuntimeError as error:
                lines = [line for line in str(error).splitlines() if line.strip()]
                self.skipped["entrepot-pg"] = f"did not start: {lines[0]} ... {lines[-1] if len(lines) > 1 else ''}"
        self._database_handle = database

    def _start_nginx(self, work: Path, storage: Path, stack: ExitStack) -> None:
        """The deployment shape of infra/deploy/nginx: the embedded Entrepôt with [storage] accel_redirect,
        behind nginx running the deployed config; nginx sends the warm blobs, Entrepôt answers for them."""
        if not self.options.nginx:
            self.skipped["entrepot-nginx"] = "--no-nginx"
            return
        if shutil.which("nginx") is None:
            self.skipped["entrepot-nginx"] = "nginx is not installed (apt-get install -y nginx)"
            return
        behind = stack.enter_context(DockerRegistry(work / "up-entrepot-nginx", storage, access_log=True))
        server = stack.enter_context(entrepot_server(work / "entrepot-nginx", behind.url, engine=self.options.engine,
                                                     accel_redirect=ACCEL_LOCATION))
        front = stack.enter_context(Nginx(work / "nginx", server.host, server.data_dir / "storage" / "blobs"))
        # Entrepôt's pid: the idle wait and the memory figure watch the process that does the work.
        self.targets.append(Target("entrepot-nginx", front.url, f"{ORG}/", server.process.pid, AccessLog(behind)))
        self.say(f"started entrepot-nginx {front.url} (nginx) -> {server.url}")

    def _database(self, stack: ExitStack) -> FreshDatabase | None:
        if not self.options.postgres:
            self.skipped["entrepot-pg"] = "--no-postgres"
            return None
        url = self.options.postgres_url
        host_port = url.split("@")[-1].split("/")[0]
        host, _, port = host_port.partition(":")
        if not reachable(host or "127.0.0.1", int(port or 5432)):
            self.skipped["entrepot-pg"] = f"PostgreSQL not reachable at {host_port}"
            return None
        if not database_url_supported():
            self.skipped["entrepot-pg"] = "this checkout's settings have no [database] url"
            return None
        database = FreshDatabase(url).create()
        stack.callback(database.drop)  # registered first, so it runs after the server stopped
        return database

    def target(self, name: str) -> Target | None:
        return next((t for t in self.targets if t.name == name), None)

    def _order(self, number: int, names: tuple[str, ...]) -> list[Target]:
        """The targets of one round, rotated each round so none always goes first."""
        chosen = [t for t in self.targets if t.name in names]
        shift = number % len(chosen) if chosen else 0
        return chosen[shift:] + chosen[:shift]

    # -- measuring -------------------------------------------------------------------------------
    def _record(self, measurement: str, target: Target, action) -> None:
        # Idle Entrepôt polls its SQLite event stores (about 6 % of a core here): below 15 % counts as idle.
        waited = machine.wait_idle([t.pid for t in self.targets if t.pid])
        if waited > 1.5 and self.last_measured:
            self.idle_waits.append({"before": measurement, "target": target.name, "seconds": round(waited, 1),
                                    "after": self.last_measured})
        self.last_measured = f"{measurement} on {target.name}"
        try:
            sample = action()
        except Exception as error:  # one failed measurement must not lose the rest of the run
            sample = {"error": str(error)[:500]}
            self.failures.append(f"{measurement} on {target.name}: {sample['error']}")
        self.rounds.setdefault(measurement, {}).setdefault(target.name, []).append(sample)
        shown = ", ".join(f"{k} {v:,.2f}" for k, v in sample.items() if isinstance(v, float)) or sample.get("error")
        self.say(f"{measurement:<20} {target.name:<12} {shown}")

    def _measure_all(self, work: Path) -> None:
        o = self.options
        small = push_image(self.pusher, work, "bench/small", "v1", [o.small_layer_kib * 1024] * o.small_layers)
        large = push_image(self.pusher, work, "bench/large", "v1", [int(o.blob_mib * MIB)])
        self.say(f"pushed bench/small ({o.small_layers} layers) and bench/large ({o.blob_mib:g} MiB layer)")
        self._warm(small, large)
        everyone = ("upstream", "peer", "entrepot", "entrepot-pg", "entrepot-nginx")
        caches = ("peer", "entrepot", "entrepot-pg", "entrepot-nginx")
        blob = large.largest_layer
        self.labels["cold_20_clients"] = f"cold pull, {o.cold_clients} clients"
        for number in range(o.rounds):
            self.say(f"round {number + 1} of {o.rounds}")
            for t in self._order(number, everyone):
                self._record("manifest_by_tag", t, lambda: measure.wrk(
                    t.manifest_url(small.repository, small.tag), o.wrk_seconds))
            for t in self._order(number, everyone):
                self._record("manifest_by_digest", t, lambda: measure.wrk(
                    t.manifest_url(small.repository, small.manifest_digest), o.wrk_seconds))
            for streams, measurement in ((1, "blob_1_stream"), (4, "blob_4_streams")):
                for t in self._order(number, everyone):
                    self._record(measurement, t, lambda: measure.blob_throughput(
                        t.blob_url(large.repository, blob.digest), blob.size, streams, o.blob_seconds))
            layers = [int(o.cold_layer_mib * MIB)] * o.cold_layers
            image = push_image(self.pusher, work, f"bench/cold-{number}-one", "v1", layers, multi_arch=True)
            for t in self._order(number, everyone):
                self._record("cold_1_client", t, lambda: measure.cold_pull(t, image, 1, o.cold_client))
            image = push_image(self.pusher, work, f"bench/cold-{number}-many", "v1", layers, multi_arch=True)
            for t in self._order(number, caches):
                self._record("cold_20_clients", t,
                             lambda: measure.cold_pull(t, image, o.cold_clients, o.cold_client))
        if o.memory_layer_mib > 0:
            self._measure_memory(work, caches)

    def _measure_memory(self, work: Path, caches: tuple[str, ...]) -> None:
        o = self.options
        self.say(f"generating and pushing the {o.memory_layer_mib:g} MiB layer")
        big = push_image(self.pusher, work, "bench/huge", "v1", [int(o.memory_layer_mib * MIB)])
        self.labels["cold_memory"] = f"cold {o.memory_layer_mib:g} MiB layer, {o.memory_clients} clients"
        if o.memory_layer_mib < 1024:
            self.notes["cold_memory"] = f"{o.memory_layer_mib:g} MiB layer, the target is about 1 GiB"
        for t in self._order(0, caches):
            self._record("cold_memory", t, lambda: memory.cold_blob_memory(t, big, o.memory_clients))

    def _warm(self, small: BenchImage, large: BenchImage) -> None:
        """Pull both images through every target, so the rounds measure warm caches; check the hits."""
        for t in self.targets:
            for image in (small, large):
                try:
                    measure.cold_pull(t, image, 1)
                except measure.MeasurementFailed as error:
                    self.failures.append(f"warm-up on {t.name}: {error}")
            with httpx.Client(timeout=30) as http:
                answer = http.get(t.manifest_url(small.repository, small.tag), headers={"Accept": DOCKER_MANIFEST})
                if t.name.startswith("entrepot") and answer.headers.get("x-cache") != "HIT":
                    self.failures.append(f"warm-up on {t.name}: a second pull by tag answered "
                                         f"X-Cache {answer.headers.get('x-cache')}, not HIT")
            if self.options.warmup_wrk_seconds <= 0:
                continue
            try:  # connections, caches, allocator
                measure.wrk(t.manifest_url(small.repository, small.tag), self.options.warmup_wrk_seconds)
            except measure.MeasurementFailed as error:
                self.failures.append(f"warm-up on {t.name}: {error}")
        self._check_postgres()
        self.say("warm: " + ", ".join(t.name for t in self.targets))

    def _check_postgres(self) -> None:
        database, on_pg = self._database_handle, self.target("entrepot-pg")
        if database is None or on_pg is None:
            return
        try:
            tables = database.tables()
        except Exception as error:  # e.g. max_connections reached by other clients of this PostgreSQL
            self.failures.append(f"could not check that entrepot-pg uses PostgreSQL: {str(error).strip()}")
            return
        if not tables:  # started and answered, but on something else (its embedded SQLite)
            self.targets.remove(on_pg)
            self.servers["entrepot-pg"].stop()
            self.skipped["entrepot-pg"] = ("the server left the fresh PostgreSQL database empty: this checkout's "
                                           "serve ignores [database] url")


def _start_together(stack: ExitStack, groups: list[list]) -> None:
    """Start each group's servers in order, the groups at once (each start waits until its server
    answers): start-up is mostly waiting, so this saves most of it. All stop when `stack` closes."""
    for group in groups:
        for server in group:
            stack.callback(server.stop)   # a server that did not start has nothing to stop

    def start(group: list) -> None:
        for server in group:
            server.start()
    with ThreadPoolExecutor(len(groups)) as pool:
        for started in [pool.submit(start, group) for group in groups]:
            started.result()   # the first failure is raised, after every group has finished


def _asgi_server(log: str) -> str:
    """Which HTTP server `entrepot serve` runs (its start-up lines tell)."""
    lowered = log.lower()
    return next((name for name in ("granian", "uvicorn") if name in lowered), "unknown")
