"""Which of an image's blobs a prefetch may fetch before its client asks: what fits in the room left (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def room_left(*bounds: int | None) -> int | None:
    """The tightest of `bounds` (bytes that may still be written under each limit), never below 0;
    None when no limit bounds it."""
    known = [bound for bound in bounds if bound is not None]
    return max(0, min(known)) if known else None


def quota_room(quota_bytes: int, usage: int, reserved: int) -> int | None:
    """What an org with `quota_bytes` (0: no quota) may still have prefetched: the quota less what its
    images hold (`usage`, as the retention view counts it) and less its prefetches still running."""
    return quota_bytes - usage - reserved if quota_bytes else None


def blobs_that_fit(blobs: Iterable[str], sizes: Mapping[str, int], room: int | None) -> list[str]:
    """`blobs` in their order (config, then layers), each taken while its declared size still fits in
    `room`; one too big is skipped and the smaller ones after it may still fit. With a bound, a blob of
    unknown size is never taken (it could be any size). The client's own GETs fill the others as usual:
    a prefetch only ever starts early what is sure to fit."""
    if room is None:
        return list(dict.fromkeys(blobs))
    chosen: list[str] = []
    for digest in dict.fromkeys(blobs):
        size = sizes.get(digest)
        if size is not None and 0 <= size <= room:
            chosen.append(digest)
            room -= size
    return chosen
