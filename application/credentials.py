"""Upstream credentials in their own application, so that only this event store is encrypted."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event


class UpstreamCredentials(Aggregate):
    class Set(Aggregate.Created):
        org: str
        username: str
        password: str

    class Changed(Aggregate.Event):
        username: str
        password: str

    @staticmethod
    def create_id(org: str) -> UUID:
        # the id is stored in plaintext, so it derives from the org name only, never from a secret
        return uuid5(NAMESPACE_URL, f"entrepot:credentials:{org}")

    @event(Set)
    def __init__(self, org: str, username: str, password: str) -> None:
        self.org, self.username, self.password = org, username, password

    def change(self, username: str, password: str) -> None:
        if (username, password) != (self.username, self.password):
            self._changed(username=username, password=password)

    @event(Changed)
    def _changed(self, username: str, password: str) -> None:
        self.username, self.password = username, password


class Credentials(Application[UUID]):
    """Configured with CREDENTIALS_CIPHER_TOPIC / CREDENTIALS_CIPHER_KEY: event state is AES-GCM encrypted."""

    name = "Credentials"

    def set(self, org: str, username: str, password: str) -> None:
        try:
            credentials = self.repository.get(UpstreamCredentials.create_id(org))
            credentials.change(username, password)
        except AggregateNotFoundError:
            if not username and not password:
                return
            credentials = UpstreamCredentials(org=org, username=username, password=password)
        self.save(credentials)

    def get(self, org: str) -> tuple[str, str]:
        try:
            credentials = self.repository.get(UpstreamCredentials.create_id(org))
        except AggregateNotFoundError:
            return "", ""
        return credentials.username, credentials.password
