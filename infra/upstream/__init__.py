"""The upstream registry client (httpx): the adapter behind application.ports.Upstream."""

from infra.upstream.auth import RegistryAuth, TokenCache
from infra.upstream.client import HttpBlob, HttpUpstream

__all__ = ["HttpBlob", "HttpUpstream", "RegistryAuth", "TokenCache"]
