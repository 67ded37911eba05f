"""The one composition root: builds every long-lived object from Settings."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncio

import anyio.to_thread

from application.breaker import BackoffPolicy, UpstreamBackoff
from application.admin import AdminViews, ConfiguredOrgs, OrgAdmin
from application.analytics import Analytics
from application.audit import AuditLog
from application.history import History
from application.archive import Archiver, ArchiveService
from application.archive_reading import SegmentArchive
from application.audit_seals import AuditSeals, read_seals
from application.audit_verify import VerifyReport, verify
from application.governance import GovernedUpstream
from application.prewarm import Prewarm
from application.pull_through import Limits, pull_through
from application.eviction import Evictor
from application.eviction_service import EvictionService, NudgingLedger
from application.records_ledger import RecordsLedger
from domain.org_settings import OrgSettings
from application.metering import MeteredUpstream
from application.access import Access
from application.access_admin import AccessAdmin
from application.authentication import Authenticator
from application.credentials import Credentials
from application.ops_log import OpsLog
from application.orgs import OrgDirectory
from application.pulls import GroupCommit, Pulls
from application.ports import BlobStore, Clock, Upstream
from application.cache_records import CacheRecords
from application.retention_admin import CacheRetention
from application.what_if import ViewReads, WhatIf
from application.routing import OrgRouter
from application.traffic import TrafficMeter, TrafficRecorder
from infra.clock import SystemClock
from infra import data_dir, persistence
from infra.metrics import PrometheusMetrics, new_collector_registry
from infra.analytics_metrics import AnalyticsCollector
from infra.rate_limit_metrics import RateLimitCollector
from infra.read_model_metrics import ReadModelCollector
from infra.secrets import admin_token, private_dir, secret_key
from infra.archived_audit import ArchivedAudit
from infra.event_rows import SqlEventRows
from infra.seal_file import SealFile
from infra.storage.archive import build_segment_store
from projections.catalog import CATALOG
from infra.tokens import JwtTokens
from infra.settings import Settings, SettingsError
from infra.evictor_lock import InProcessEvictorLock, PostgresEvictorLock
from infra.retention_metrics import RetentionCollector
from infra.coordination import InProcessCoordination, RedisCoordination, build_coordination
from infra.storage import FilesystemBlobStore, build_blob_store
from infra.upstream import HttpUpstream
from infra.upstream.egress import egress_proxy
from infra.upstream.guard import UpstreamGuard
from domain.org_settings import normalize_upstream
from domain.upstream_policy import parse_networks
from infra.projection_runtime.point_in_time import ReplayReport, replay_until
from infra.projection_runtime import (LockedRunners, is_postgres, open_tags_and_manifests, open_view, projection_runners,
                                     rebuild_many, status)
from infra.projection_runtime.progress import wait_for
from interfaces.http.accel import AccelRedirect
from interfaces.http.health import (Probe, blob_storage_check, coordination_check, event_store_check,
                                    quota_check, read_model_check)

log = logging.getLogger(__name__)

# Fill coordination and shared tag lookups in one object, with check() for /readyz and aclose().
Coordination = InProcessCoordination | RedisCoordination


def event_store_env(settings: Settings) -> dict[str, str]:
    return persistence.event_store_env(settings)  # SQLite or PostgreSQL, chosen in one place


def bootstrap(settings: Settings, *, clock: Clock | None = None, upstream: Upstream | None = None,
              store: BlobStore | None = None, coordination: Coordination | None = None) -> Container:
    """Build everything `entrepot serve` runs from settings; what is passed in replaces what settings would build.

    `clock`: the time every staleness, back-off and fill deadline is measured by (tests advance one).
    `upstream`: the bottom of the upstream chain, in place of the HTTP client (metering and back-off
    still wrap it). `store`: the blob store ([storage]). `coordination`: fills and shared tags ([redis]).
    """
    return Container(settings, clock=clock, upstream=upstream, store=store, coordination=coordination)


STOP_STEP_SECONDS = 5.0   # per background part at shutdown
SETTLE_POLL = 0.005       # seconds between looks at a view an admin's flush, pin or seal waits for


class Container:
    """Everything `entrepot serve` runs (see bootstrap()); start() and stop() bracket serving."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None, upstream: Upstream | None = None,
                 store: BlobStore | None = None, coordination: Coordination | None = None) -> None:
        self.settings = settings
        self.data_dir = os.path.abspath(settings.data_dir)
        private_dir(self.data_dir)   # 0700: it holds the audit (client addresses), keys and tokens
        self.env = event_store_env(settings)
        self.clock = clock or SystemClock()
        self.records = CacheRecords(env=self.env)
        self.pulls = Pulls(env=self.env)
        self.credentials = Credentials(env=self.env)
        self.access = Access(env=self.env)   # robots and org admins (token hashes), and the admin actions log
        # Orgs are read from the orgs view (plus this process's own writes), not from the event store.
        orgs_view = open_view("orgs", self.env)
        self.orgs = OrgDirectory(self.records, self.credentials, orgs_view)
        self.store = store or build_blob_store(settings)
        # nginx in front sends published blob files itself ([storage] accel_redirect; filesystem only).
        self.accel = (AccelRedirect(settings.storage.accel_redirect, self.store.blobs_dir)
                      if settings.storage.accel_redirect and isinstance(self.store, FilesystemBlobStore) else None)
        # Redis, or in-process when no [redis] url
        self.coordination = coordination or build_coordination(settings.redis)
        # This app's own registry: several apps in one process (tests) must not share series.
        self.metrics_registry = new_collector_registry()
        # Prometheus, and the per-org traffic sums the recorder turns into TrafficReport events.
        self.metrics = TrafficMeter(PrometheusMetrics(self.metrics_registry))
        # The SSRF guard: the config file's orgs are the operator's own; admin-made ones reach internal
        # networks only inside [security] allowed_upstream_networks. Via: a hop header every replica
        # sharing the credentials key sends and recognises, so a loop back to the cluster is cut (508).
        self.guard = UpstreamGuard(
            parse_networks(settings.security.allowed_upstream_networks),
            {(org.name, normalize_upstream(org.upstream)) for org in settings.organizations},
            via=hashlib.sha256(b"entrepot-via\0" + self.env["CREDENTIALS_CIPHER_KEY"].encode()).hexdigest()[:16])
        limits = settings.upstream
        # INFO lines for the operator (upstream failures, back-off, stale serves, fills, refusals), rate-limited.
        self.ops_log = OpsLog(self.clock)
        # Back-off wraps the client: an upstream that keeps failing is not waited on again for a while.
        # Metering sits between them, so it counts the requests really sent upstream.
        # The pull-through mode on top: a miss it does not let through is never an upstream failure to back off from.
        self.upstream = GovernedUpstream(UpstreamBackoff(
            MeteredUpstream(upstream or HttpUpstream(connect_timeout=limits.connect_timeout,
                                                     read_timeout=limits.read_timeout, guard=self.guard,
                                                     egress=egress_proxy(limits.proxy, limits.no_proxy, os.environ)),
                            self.metrics),
            self.clock, BackoffPolicy(
                failures=limits.failures_before_backoff, failure_ratio=limits.backoff_failure_ratio,
                repositories=limits.backoff_repositories, window_seconds=limits.backoff_window_seconds,
                backoff_seconds=limits.backoff_seconds), ops=self.ops_log), settings.pull_through)
        self.view = open_tags_and_manifests(self.env)
        referrers_view = open_view("referrers", self.env)
        # Retention with archive: old pulls move to segments in blob storage; audit queries, and views
        # replayed from the start (a schema change), read them from there.
        self.archive = SegmentArchive(self.access, build_segment_store(settings))
        self.runners = projection_runners(self.env, in_process=settings.database.run_projections,
                                          archive=self.archive)
        self.traffic = TrafficRecorder(self.pulls, self.metrics, self.clock,
                                       interval=settings.analytics.traffic_interval_seconds,
                                       generation_of=lambda name: (config.generation if (
                                           config := self.orgs.get(name)) is not None else None))
        grace = settings.storage.delete_grace_seconds
        # In-process answers of an evicted image end well within the grace period.
        limits = Limits(recent_tag_seconds=min(5.0, max(grace / 4, 0.25)),
                        manifest_row_seconds=min(30.0, max(grace / 2, 0.5)),
                        prefetch_blobs=settings.upstream.prefetch_blobs)
        # A request waits for its pull's record as long as for any other record.
        self.group_commit = GroupCommit(self.pulls, metrics=self.metrics, max_backlog=settings.database.pull_backlog,
                                        wait_timeout=limits.record_timeout)
        # Client-mode routing, the admin surface, the evictor and /metrics read the views directly (our own readers).
        views = self.read_views = {"orgs": orgs_view, "referrers": referrers_view, **{
            name: open_view(name, self.env) for name in (
                "tags", "manifests", "blobs", "counters", "audit", "retention", "analytics", "history", "chain")}}
        self.evictor = Evictor(self.records, views["retention"], self.store, self.clock,
                               lambda: [(row.name, OrgSettings.from_stored(row.settings))
                                        for row in orgs_view.list_orgs()], pulls=self.pulls,
                               max_bytes=settings.storage.max_bytes, grace_seconds=settings.storage.delete_grace_seconds)
        # One evictor in the cluster: PostgreSQL's advisory lock; SQLite means one process.
        self.evictions = EvictionService(
            self.evictor, PostgresEvictorLock(self.env) if is_postgres(self.env) else InProcessEvictorLock(),
            interval=min(max(settings.storage.delete_grace_seconds / 4, 1.0), 15.0))
        # A completed fill nudges the evictor; the request never waits for it.
        ledger = NudgingLedger(RecordsLedger(self.records, timeout=limits.record_timeout), self.evictions.nudge)
        self.cache = pull_through(records=self.records, orgs=self.orgs, view=self.view, store=self.store,
                                  upstream=self.upstream, pulls=self.group_commit, clock=self.clock,
                                  fill_coordinator=self.coordination, shared_tags=self.coordination,
                                  metrics=self.metrics, ops=self.ops_log, referrers=referrers_view,
                                  ledger=ledger, limits=limits,
                                  usage=views["retention"].usage)   # a prefetch stays within an org's quota
        self.metrics_registry.register(
            ReadModelCollector(views["blobs"], views["manifests"], views["tags"], views["counters"]))
        self.metrics_registry.register(RetentionCollector(views["retention"], orgs_view))
        self.metrics_registry.register(RateLimitCollector(self.cache.rate_limits.all))
        self.metrics_registry.register(AnalyticsCollector(self.runners.status, views["analytics"]))
        self.router = OrgRouter(self.orgs.lookup, views["orgs"])
        self.admin = OrgAdmin(self.orgs, self.records,
                              AdminViews(views["orgs"], views["tags"], views["blobs"], views["counters"]),
                              rate_limits=self.cache.rate_limits,  # the latest upstream ratelimit-* reading
                              on_change=self.router.forget, upstream_refusal=self.guard.upstream_refusal,
                              # re-applied at every start, so not changed through the API
                              configured=ConfiguredOrgs(frozenset(org.name for org in settings.organizations),
                                                        settings.config_file and os.path.abspath(settings.config_file)))
        self.prewarm = Prewarm(self.cache)   # explicit fills, whatever [server] pull_through says
        self.retention = CacheRetention(
            self.records, views["retention"],
            lambda name: (config.settings if (config := self.orgs.get(name)) is not None else None),
            self.clock, settled=self._views_settled, forget=self.cache.forget)
        self.admin.retention_usage = self.retention.usage
        self.admin.content = self.retention   # what `org delete --flush` flushes
        audit_rows = ArchivedAudit(views["audit"], self.archive, self.pulls.mapper)   # archived pulls, then the view
        self.audit_log = AuditLog(audit_rows)
        self.archiver = build_archiver(settings, self.env, self.pulls, self.access, views["chain"], views["audit"],
                                       lambda: pulls_projected(views), self.clock)
        self.archiving = ArchiveService(self.archiver)
        # Seals of the audit chain (the chain view's heads) into the Access log, on demand and periodically.
        self.audit_seals = AuditSeals(
            self.access, views["chain"], self.clock, interval=settings.audit.seal_interval_seconds,
            export=SealFile(settings.audit.seal_file) if settings.audit.seal_file else None,
            settled=lambda: self._chain_settled())
        self.history = History(views["history"], self.audit_log, lambda name: views["orgs"].get_org(name) is not None)
        self.analytics = Analytics(views["analytics"], lambda: [row.name for row in views["orgs"].list_orgs()],
                                   self.clock.now)
        self.what_if = WhatIf(ViewReads(audit_rows, views["retention"], self.analytics), self.records,
                              lambda name: self.orgs.get(name) is not None, self.clock.now)
        self.admin_token, self.admin_token_generated = admin_token(self.data_dir, settings.admin_token)
        # Pull tokens are signed with a key derived from the secret every replica shares (infra/tokens.py).
        self.tokens = JwtTokens(secret_key(self.data_dir, settings.secret_key), self.clock)
        self.authenticator = Authenticator(self.access, self.tokens, self.admin_token)
        self.access_admin = AccessAdmin(self.access, lambda org: self.orgs.get(org) is not None, views["tags"],
                                        self.clock, on_change=self.authenticator.forget,
                                        settled=self._views_settled)
        # What /readyz asks, in its answer's order; without a required one a replica cannot serve correctly
        # (without Redis it serves, uncoordinated).
        self.probes = [
            Probe("event_store", event_store_check(self.env, self.records)),
            Probe("read_model", read_model_check(self.runners)),
            Probe("blob_storage", blob_storage_check(self.store)),
            Probe("redis", coordination_check(self.coordination), required=False),
            Probe("quota", quota_check(self.evictor), required=False),
        ]

    def serving_on(self, host: str, port: int) -> None:
        """Where this server listens, once bound: an org's upstream there is refused (a loop)."""
        self.guard.serving_on(host, port)

    def _views_settled(self, timeout: float = 2.0) -> None:
        """After an admin's flush or pin: the hot path's views (and the retention view) show it."""
        # wait_for, not the views' own wait(): that one sleeps 100 ms or more whenever the view is behind
        # (STACK-NOTES P4), and it does not tell this process's gathering workers to read now (HURRY).
        position = self.records.recorder.max_notification_id() or 0
        for name in ("tags", "manifests", "retention", "referrers"):
            try:
                wait_for([(self.read_views[name], self.records.name, position)], timeout, SETTLE_POLL)
            except TimeoutError:
                log.warning("the %s view has not caught up after %ss", name, timeout)

    def _chain_settled(self, timeout: float = 2.0) -> None:
        """Before an operator's seal: the chain view holds the pulls and admin events recorded so far."""
        for app in (self.pulls, self.access):
            position = app.recorder.max_notification_id() or 0
            try:
                wait_for([(self.read_views["chain"], app.name, position)], timeout, SETTLE_POLL)
            except TimeoutError:
                log.warning("the chain view has not caught up with %s after %ss; sealing what it holds",
                            app.name, timeout)

    def apply_configured_orgs(self) -> None:
        for org in self.settings.organizations:
            if self.orgs.apply(org.name, org.as_command()):
                log.info("organization %s applied from the config file", org.name)

    async def start(self) -> None:
        # No fill can be running before we start: any spool file is a leftover of a killed process.
        removed = await anyio.to_thread.run_sync(self.store.clean_spool)
        if removed:
            log.warning("removed %d partial downloads left by an earlier process", removed)
        await anyio.to_thread.run_sync(self.apply_configured_orgs)
        await anyio.to_thread.run_sync(self.runners.start)
        # Serve once the read model shows the configured orgs (the admin list, the ns routing);
        # a slow or crashed projection is logged and serving starts anyway (pulls do not need it).
        try:
            await anyio.to_thread.run_sync(lambda: self.runners.wait_caught_up(timeout=10.0))
        except Exception as error:
            log.warning("starting before the read model caught up: %s", error)
        await self.group_commit.start()
        await self.traffic.start()
        await self.evictions.start()   # also finishes deletions a killed process left half done
        await self.audit_seals.start()
        await self.archiving.start()

    async def stop(self) -> None:
        # Each background part gets a bounded time to stop: a part that does not end (a round or a
        # report waiting on something that never comes) must not keep the process from exiting.
        for name, stop in (("archive", self.archiving.stop), ("audit seals", self.audit_seals.stop), ("evictor", self.evictions.stop), ("group commit", self.group_commit.stop),
                           ("traffic reports", self.traffic.stop),   # after the last requests' traffic
                           ("upstream client", self.upstream.aclose), ("coordination", self.coordination.aclose)):
            try:
                async with asyncio.timeout(STOP_STEP_SECONDS):
                    await stop()
            except TimeoutError:
                log.warning("stopping the %s took longer than %gs; going on", name, STOP_STEP_SECONDS)
        await anyio.to_thread.run_sync(self.runners.stop)
        self.view.close()
        for view in self.read_views.values():
            view.close()
        for app in (self.records, self.pulls, self.credentials, self.access):
            app.close()


def projection_status(settings: Settings) -> list[dict]:
    inspected_data_dir(settings)
    env = event_store_env(settings)
    # On SQLite the projections run inside `entrepot serve`: they run while a server holds the data dir.
    serving = not is_postgres(env) and data_dir.in_use_by_a_server(settings.data_dir)
    return [
        {"projection": s.projection, "application": s.application, "position": s.position,
         "head": s.max_notification_id, "lag": s.lag, "state": s.state}
        for s in status(env, serving=serving)
    ]


PULLS_FOLLOWERS = tuple(name for name, spec in CATALOG.items() if "Pulls" in spec.applications)


def pulls_projected(views: dict) -> int:
    """The last Pulls position every view following Pulls has processed: archiving goes no further."""
    return min(views[name].max_tracking_id("Pulls") or 0 for name in PULLS_FOLLOWERS)


def build_archiver(settings: Settings, env: dict, pulls: Pulls, access: Access, chain, audit, projected, clock,
                   step=None, batch: int = 5000) -> Archiver:
    return Archiver(pulls, access, build_segment_store(settings), SqlEventRows(env), chain, audit, projected, clock,
                    retain_days=settings.audit.retain_days, batch=batch, step=step)


class OfflineAudit:
    """The event store, the chain and audit views and the archive, opened from settings for a CLI command."""

    def __init__(self, settings: Settings) -> None:
        inspected_data_dir(settings)
        self.settings, self.env = settings, event_store_env(settings)
        self.pulls, self.access = Pulls(env=self.env), Access(env=self.env)
        self.views = {name: open_view(name, self.env) for name in {*PULLS_FOLLOWERS, "chain", "audit"}}
        self.archive = SegmentArchive(self.access, build_segment_store(settings))

    def archiver(self, step=None, batch: int = 5000) -> Archiver:
        return build_archiver(self.settings, self.env, self.pulls, self.access, self.views["chain"],
                              self.views["audit"], lambda: pulls_projected(self.views), SystemClock(), step=step,
                              batch=batch)

    def close(self) -> None:
        for view in self.views.values():
            view.close()
        self.pulls.close()
        self.access.close()

    def __enter__(self) -> OfflineAudit:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def verify_audit(settings: Settings, since: str | None = None) -> VerifyReport:
    """`entrepot audit verify`: the chain recomputed from the archive and the stored events, against the
    segments' links, the chain view and the seals."""
    with OfflineAudit(settings) as audit:
        return verify({"Pulls": audit.pulls, "Access": audit.access}, audit.views["chain"],
                      read_seals(audit.access), since=since, archive=audit.archive)


def audit_seals(settings: Settings) -> list[dict]:
    """Every seal in the Access log (read from the event store, no server needed)."""
    inspected_data_dir(settings)
    access = Access(env=event_store_env(settings))
    try:
        return [seal.as_dict() for seal in read_seals(access)]
    finally:
        access.close()


def separate_runners(settings: Settings) -> LockedRunners:
    """`entrepot projections run`: every projection no other process runs, until stopped (PostgreSQL only)."""
    env = event_store_env(settings)
    if not is_postgres(env):
        raise SettingsError("`projections run` needs [database] url (PostgreSQL); the embedded mode runs "
                            "the projections inside `entrepot serve`")
    # The archive: a copy rebuilt for a schema change replays the archived pulls first. Its Access app
    # lives as long as the runners, i.e. the process.
    return LockedRunners(env, archive=SegmentArchive(Access(env=env), build_segment_store(settings)))


def rebuild_projections(settings: Settings, names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Rebuild the views in one pass over each log (each page read and decoded once for all of them),
    the archived pulls first (views following Pulls keep counting them)."""
    inspected_data_dir(settings)
    env = event_store_env(settings)
    with opened_archive(settings, env) as archive:
        if is_postgres(env):
            return rebuild_many(names, env, archive=archive)   # blue/green: the server keeps serving the old copies
        with data_dir.held_alone(settings.data_dir):   # in place: no server may read or write the views meanwhile
            return rebuild_many(names, env, archive=archive)


def replay_to_file(settings: Settings, until: float, out: Path, force: bool = False) -> ReplayReport:
    """`entrepot replay`: the views as of `until` into a new SQLite file; reads the event store and the
    archive only, so a running server is no obstacle."""
    inspected_data_dir(settings)
    env = event_store_env(settings)
    with opened_archive(settings, env) as archive:
        return replay_until(env, until, out, force, archive=archive)


@contextmanager
def opened_archive(settings: Settings, env: dict) -> Iterator[SegmentArchive]:
    """The archive of old pulls for a command that replays the log: its segments as the Access log records them."""
    access = Access(env=env)
    try:
        yield SegmentArchive(access, build_segment_store(settings))
    finally:
        access.close()


def inspected_data_dir(settings: Settings) -> None:
    """Commands that inspect or rebuild never create a data directory (with an empty database and a new key).

    It is read on SQLite (databases) and whenever no secret_key is configured (the key file); a
    PostgreSQL deployment with its key in the environment needs none (the projections pod).
    """
    if not settings.database.url or not settings.secret_key:
        data_dir.existing(settings.data_dir)
