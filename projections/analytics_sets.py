"""The analytics view's sets of members (distinct clients, distinct repositories) as small stored values.

Each member of an org is interned once per kind to a small integer (in order of first appearance in
the log, so a rebuild assigns the same ones), and a bucket keeps the set of its members' integers as
one value: a range's distinct count is then the OR of its buckets' sets, a few hundred values, rather
than a COUNT(DISTINCT) over a row per member and bucket (bench/results/2026-11-30-analytics-history.md).

A set is stored as whichever of two forms is smaller, told apart by the first byte:
- DENSE: the bits of a Python int (bit i set: member i is in), little-endian;
- SPARSE: the members' integers as little-endian uint32, ascending — a minute bucket of an org with
  a million clients holds a few of them, where its bitmap would take 125 KB.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable

from cachetools import LRUCache

DENSE, SPARSE = 0, 1


def encode(bits: int) -> bytes:
    """The stored form of the set whose members are the bits of `bits`."""
    dense = (bits.bit_length() + 7) // 8
    count = bits.bit_count()
    if 4 * count < dense:
        return bytes((SPARSE,)) + struct.pack(f"<{count}I", *members(bits))
    return bytes((DENSE,)) + bits.to_bytes(dense, "little")


def decode(stored: bytes) -> int:
    """The set as an int's bits."""
    if stored[0] == DENSE:
        return int.from_bytes(memoryview(stored)[1:], "little")
    return of(struct.unpack(f"<{(len(stored) - 1) // 4}I", memoryview(stored)[1:]))


# Sparse sets decoded, by their stored bytes, so an entry is right for any view, copy or version: a range's
# union decodes the same minute and hour sets again query after query, and decoding a sparse set (a Python
# step per member) was most of an every-org summary's CPU. Bounded by the decoded ints' size; shared by
# the threads that answer queries, hence the lock.
_DECODED: LRUCache = LRUCache(maxsize=64 * 2**20, getsizeof=lambda bits: bits.bit_length() // 8 + 100)
_DECODED_LOCK = threading.Lock()


def union(stored: Iterable[bytes]) -> int:
    """The union of stored sets as an int's bits: the dense ones OR-ed, the sparse ones decoded once
    (then found by their bytes) and OR-ed too."""
    bits, unknown = 0, []
    with _DECODED_LOCK:
        for value in stored:
            if value[0] == DENSE:
                bits |= int.from_bytes(memoryview(value)[1:], "little")
            else:
                known = _DECODED.get(value)
                if known is None:
                    unknown.append(value)
                else:
                    bits |= known
    for value in unknown:
        decoded = decode(value)
        with _DECODED_LOCK:
            _DECODED[bytes(value)] = decoded
        bits |= decoded
    return bits


def of(ids: Iterable[int]) -> int:
    """The set of these members' integers as an int's bits (built in a bytearray: OR-ing `1 << i` one by
    one would copy the growing int at each member)."""
    ids = list(ids)
    if not ids:
        return 0
    bits = bytearray(max(ids) // 8 + 1)
    for i in ids:
        bits[i >> 3] |= 1 << (i & 7)
    return int.from_bytes(bits, "little")


def members(bits: int) -> list[int]:
    """The members' integers of a set, ascending."""
    out, raw = [], bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    for index, byte in enumerate(raw):
        while byte:
            low = byte & -byte
            out.append(index * 8 + low.bit_length() - 1)
            byte ^= low
    return out
