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

import re
import struct
import threading
from collections.abc import Collection, Iterable

from cachetools import LRUCache

DENSE, SPARSE = 0, 1


def encode(bits: int) -> bytes:
    """The stored form of the set whose members are the bits of `bits`."""
    dense = (bits.bit_length() + 7) // 8
    count = bits.bit_count()
    if 4 * count < dense:
        return bytes((SPARSE,)) + struct.pack(f"<{count}I", *members(bits))
    return bytes((DENSE,)) + bits.to_bytes(dense, "little")


def encode_members(ids: Collection[int]) -> bytes:
    """encode(of(ids)), without building the int for a sparse set (repeats allowed)."""
    unique = sorted(set(ids))
    if unique and 4 * len(unique) < unique[-1] // 8 + 1:
        return bytes((SPARSE,)) + struct.pack(f"<{len(unique)}I", *unique)
    return encode(of(unique))


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


# The positions of the set bits of each byte value, and the bytes of a set that hold any member.
_BYTE_MEMBERS = tuple(tuple(bit for bit in range(8) if value >> bit & 1) for value in range(256))
_NONZERO = re.compile(rb"[^\x00]")
FEW_MEMBERS = 16   # up to this many: the lowest bit taken off at a time (each step a pass over the int)


def members(bits: int) -> list[int]:
    """The members' integers of a set, ascending.

    A set of an org with 20,000 repositories spans 2.5 KB for the one or two members of a minute's bucket
    (most of a rebuild's sets): a few members are taken off the int lowest first (~6 us for two, where a
    Python step per byte took ~100 us); more, from the bytes holding any, which the regular expression
    engine finds, not a Python step each."""
    if bits.bit_count() <= FEW_MEMBERS:
        out = []
        while bits:
            low = bits & -bits
            out.append(low.bit_length() - 1)
            bits ^= low
        return out
    out, raw = [], bits.to_bytes((bits.bit_length() + 7) // 8, "little")
    for found in _NONZERO.finditer(raw):
        index = found.start()
        base = index * 8
        out.extend([base + bit for bit in _BYTE_MEMBERS[raw[index]]])
    return out
