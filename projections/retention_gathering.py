"""The retention view's Registry events gathered in a bulk rebuild, and their fold into rows.

Event by event, each manifest cached runs a handful of statements (sizes, the image, its members, orphans) and
each blob and tag one more: 1.3M Registry events at 10M pulls, most of what retention's replay cost the rebuilding
process on PostgreSQL (py-spy, 1M pulls: 19 % of its GIL time, 15 % in psycopg's execute alone; on SQLite a fifth of
the view's rebuild). In a bulk rebuild from empty (a PostgreSQL copy, a SQLite view cleared in place:
RetentionView.usage_deferred) the events that only add (manifests and blobs stored, tags moved, orgs registered) are
gathered across pages instead and written as a few set-based statements a gathering (SQLite: an executemany each).
Evictions, pins, flushes and deletions are not gathered: a page holding one writes what was gathered first,
then itself event by event (bulk.Gathering).

What makes the fold exact: within a gathering nothing leaves `members` or `children`, so every read an event
makes (the indexes a manifest is a child of; the members of a child an index lists) finds what the copy held
before the gathering plus what the gathering added before that event. `fold` reads the former once, at write
time, and replays the gathering over both in log order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.cache import CachedBlob, CachedManifest, TagResolution
from domain.org import CacheOrg
from domain.retention import StoredBlob, pull_weight

# The Registry events a gathering takes (RetentionView.defer_usage adds them to `gathers`).
GATHERED = (CachedManifest.Cached, CachedManifest.Recached, CachedBlob.Cached, StoredBlob.Restored,
            TagResolution.Resolved, TagResolution.Retargeted, TagResolution.Dropped,
            CacheOrg.Registered, CacheOrg.Recreated)

Key = tuple[str, str, str]   # (org, repository, manifest digest)


@dataclass(frozen=True)
class _Manifest:
    org: str
    repository: str
    digest: str
    media_type: str
    cached_at: float
    declared: tuple[tuple[str, int], ...]   # (its own digest, size), then the sizes its descriptors declare
    blobs: tuple[str, ...]
    children: tuple[str, ...]
    # The highest generation the gathering registered for the org before this event (0: none): the image's is
    # the higher of it and the copy's (RetentionView._generation reads the stored one, which registrations raise).
    generation_floor: int


@dataclass(frozen=True)
class _Stored:
    digest: str
    size: int
    at: float


class RegistryGathering:
    """The gathered events: manifests and blobs stored, in log order (their fold depends on it); tags and
    generations already folded (last wins, highest wins)."""

    def __init__(self) -> None:
        self.stored: list[_Manifest | _Stored] = []
        self.tags: dict[tuple[str, str, str], str | None] = {}   # (org, repository, tag) -> digest; None: dropped
        self.generations: dict[str, int] = {}                     # org -> highest generation registered

    def add(self, event: Any) -> None:
        if isinstance(event, (CachedManifest.Cached, CachedManifest.Recached)):
            self.stored.append(_Manifest(
                event.org, event.repository, event.digest, event.media_type, event.cached_at,
                ((event.digest, event.size), *(event.sizes or {}).items()), tuple(event.blobs), tuple(event.children),
                self.generations.get(event.org, 0)))
        elif isinstance(event, CachedBlob.Cached):
            self.stored.append(_Stored(event.digest, event.size, event.cached_at))
        elif isinstance(event, StoredBlob.Restored):
            self.stored.append(_Stored(event.digest, event.size, event.at))
        elif isinstance(event, (TagResolution.Resolved, TagResolution.Retargeted)):
            self.tags[(event.org, event.repository, event.tag)] = event.digest
        elif isinstance(event, TagResolution.Dropped):
            self.tags[(event.org, event.repository, event.tag)] = None
        elif isinstance(event, (CacheOrg.Registered, CacheOrg.Recreated)):
            generation = getattr(event, "generation", 1)
            self.generations[event.name] = max(self.generations.get(event.name, 0), generation)
        else:
            raise TypeError(f"retention gathers no {type(event).__name__}")

    def manifest_keys(self) -> list[Key]:
        """Every manifest the gathering caches: whose indexes (`children` rows) the fold needs."""
        return list(dict.fromkeys((m.org, m.repository, m.digest) for m in self.stored if isinstance(m, _Manifest)))

    def listed_children(self) -> list[Key]:
        """Every child an index of the gathering lists: whose members (as an image) the fold needs."""
        return list(dict.fromkeys((m.org, m.repository, child) for m in self.stored if isinstance(m, _Manifest)
                                  for child in m.children))


@dataclass
class Folded:
    """The rows a gathering leaves, to write in this order: images (a round per repeat of a key, each round's
    keys distinct), generations, sizes, members, children, orphans deleted then orphans inserted, tags."""
    image_rounds: list[list[tuple]] = field(default_factory=list)   # (org, repo, digest, media_type, cached_at,
    #                                                                  score, generation floor)
    sizes: dict[str, int] = field(default_factory=dict)             # digest -> its first size
    members: dict[tuple[str, str, str, str], None] = field(default_factory=dict)   # (org, repo, image, digest)
    children: dict[tuple[str, str, str, str], None] = field(default_factory=dict)  # (org, repo, child, image)
    unorphaned: set[str] = field(default_factory=set)               # digests referenced: no longer orphans
    orphaned: dict[str, float] = field(default_factory=dict)        # digest -> since: orphans unless a member
    #                                                                  the copy held before lists it
    usage_orgs: set[str] = field(default_factory=set)               # orgs that gained members


def fold(gathering: RegistryGathering, parents: dict[Key, list[str]], members: dict[Key, list[str]]) -> Folded:
    """The rows the gathering's events, written one by one (RetentionView._cached, _blobs_stored with usage
    deferred), would leave. `parents`: the copy's indexes of each of manifest_keys(); `members`: the copy's
    members of each of listed_children(), as an image."""
    out = Folded()
    parents_added: dict[Key, list[str]] = {}       # children rows the gathering added: child -> its indexes
    members_added: dict[Key, dict[str, None]] = {}  # members the gathering added, per image
    referenced: set[str] = set()                    # digests listed by a member the gathering added
    seen_images: dict[Key, int] = {}                # images upserted so far -> how many times

    def add_members(org: str, repository: str, image: str, digests: Iterable[str]) -> None:
        added = members_added.setdefault((org, repository, image), {})
        for member in digests:
            out.members[(org, repository, image, member)] = None
            added[member] = None
            referenced.add(member)
            out.usage_orgs.add(org)

    for item in gathering.stored:
        if isinstance(item, _Stored):
            out.sizes.setdefault(item.digest, item.size)
            # An orphan unless a member lists it: one the gathering added is known here (a later reference
            # unorphans it below), one the copy held is checked by the statement that inserts it.
            if item.digest not in referenced and item.digest not in out.orphaned:
                out.orphaned[item.digest] = item.at
            continue
        m = item
        for digest, size in m.declared:
            out.sizes.setdefault(digest, size)
        key = (m.org, m.repository, m.digest)
        indexes = [*parents.get(key, ()), *parents_added.get(key, ())]
        if indexes:   # a platform manifest of a cached index: it belongs to that image
            for index in dict.fromkeys(indexes):
                add_members(m.org, m.repository, index, (m.digest, *m.blobs))
        else:
            round_ = seen_images.get(key, 0)
            seen_images[key] = round_ + 1
            if round_ == len(out.image_rounds):
                out.image_rounds.append([])
            out.image_rounds[round_].append((m.org, m.repository, m.digest, m.media_type, m.cached_at,
                                             pull_weight(m.cached_at), m.generation_floor))
            add_members(m.org, m.repository, m.digest, dict.fromkeys((m.digest, *m.blobs, *m.children)))
            for child in m.children:
                child_key = (m.org, m.repository, child)
                out.children[(m.org, m.repository, child, m.digest)] = None
                listed = parents_added.setdefault(child_key, [])
                if m.digest not in listed:
                    listed.append(m.digest)
                # A child pulled (and cached) before its index: its members now count for the index too.
                known = [*members.get(child_key, ()), *members_added.get(child_key, ())]
                add_members(m.org, m.repository, m.digest, dict.fromkeys(known))
        for digest in (m.digest, *m.blobs, *m.children):   # referenced again: not to delete
            out.unorphaned.add(digest)
            out.orphaned.pop(digest, None)
    return out
