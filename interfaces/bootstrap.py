"""The one composition root: builds every long-lived object from Settings."""

from __future__ import annotations

import logging
import os

import anyio.to_thread

from application.cache import PullThroughCache
from application.credentials import Credentials
from application.orgs import OrgDirectory
from application.pulls import GroupCommit, Pulls
from application.registry import Registry
from infra.clock import SystemClock
from infra.persistence import embedded_env
from infra.secrets import credentials_env, secret_key
from infra.settings import Settings
from infra.storage.filesystem import FilesystemBlobStore
from infra.upstream import HttpUpstream
from projections import ProjectionRunners, SqliteCacheView, rebuild, status

log = logging.getLogger(__name__)


def event_store_env(settings: Settings) -> dict[str, str]:
    data_dir = os.path.abspath(settings.data_dir)
    env = embedded_env(data_dir)
    env.update(credentials_env(data_dir, secret_key(data_dir, settings.secret_key)))
    env["CREDENTIALS_PERSISTENCE_MODULE"] = "eventsourcing.sqlite"
    return env


class Container:
    """Everything `entrepot serve` runs, built from settings; start() and stop() bracket serving."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = os.path.abspath(settings.data_dir)
        os.makedirs(self.data_dir, exist_ok=True)
        self.env = event_store_env(settings)
        self.clock = SystemClock()
        self.registry = Registry(env=self.env)
        self.pulls = Pulls(env=self.env)
        self.credentials = Credentials(env=self.env)
        self.orgs = OrgDirectory(self.registry, self.credentials)
        self.store = FilesystemBlobStore(os.path.join(self.data_dir, "storage"))
        self.upstream = HttpUpstream()
        self.view = SqliteCacheView.from_env(self.env)
        self.runners = ProjectionRunners(self.env)
        self.group_commit = GroupCommit(self.pulls)
        self.cache = PullThroughCache(registry=self.registry, orgs=self.orgs, view=self.view, store=self.store,
                                      upstream=self.upstream, pulls=self.group_commit, clock=self.clock)

    def apply_configured_orgs(self) -> None:
        for org in self.settings.organizations:
            if self.orgs.apply(org.name, org.as_command()):
                log.info("organization %s applied from the config file", org.name)

    async def start(self) -> None:
        # No fill can be running before we start: any spool file is a leftover of a killed process.
        removed = self.store.clean_spool()
        if removed:
            log.warning("removed %d partial downloads left by an earlier process", removed)
        await anyio.to_thread.run_sync(self.apply_configured_orgs)
        self.runners.start()
        await self.group_commit.start()

    async def stop(self) -> None:
        await self.group_commit.stop()
        await self.upstream.aclose()
        await anyio.to_thread.run_sync(self.runners.stop)
        self.view.close()
        for app in (self.registry, self.pulls, self.credentials):
            app.close()


def projection_status(settings: Settings) -> list[dict]:
    return [
        {"projection": s.projection, "application": s.application, "position": s.position,
         "head": s.max_notification_id, "lag": s.lag}
        for s in status(event_store_env(settings))
    ]


def rebuild_projection(settings: Settings, name: str) -> int:
    return sum(rebuild(name, event_store_env(settings)).values())
