"""OCI names, tags and digests as value objects that enforce the distribution spec's grammar."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

# Grammar from the OCI distribution spec ("Pulling manifests" / "Pulling blobs").
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME_PATTERN = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_NAME = re.compile(rf"^{NAME_PATTERN}$")
_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^(?P<algorithm>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<encoded>[a-zA-Z0-9=_-]+)$")
_ENCODED_LENGTH = {"sha256": 64, "sha512": 128}
MAX_NAME_LENGTH = 255


class InvalidName(ValueError):
    """A repository name that the distribution spec does not allow."""


class InvalidReference(ValueError):
    """A tag or digest that the distribution spec does not allow."""


class InvalidDigest(InvalidReference):
    """A digest that is malformed or uses an algorithm we cannot verify."""


def repository_name(value: str) -> str:
    """Return `value` if it is a valid repository name, else raise InvalidName."""
    if len(value) > MAX_NAME_LENGTH:
        # distribution's limit (reference.NameTotalLengthMax); the spec notes clients' 255 too
        raise InvalidName(f"repository name is {len(value)} characters, more than {MAX_NAME_LENGTH}: "
                          f"{value[:60]!r}...")
    if not _NAME.match(value):
        raise InvalidName(f"invalid repository name: {value[:300]!r}")
    return value


@dataclass(frozen=True, slots=True)
class Digest:
    algorithm: str
    encoded: str

    @classmethod
    def parse(cls, value: str) -> Digest:
        match = _DIGEST.match(value)
        if not match:
            raise InvalidDigest(f"invalid digest: {value!r}")
        algorithm, encoded = match["algorithm"], match["encoded"]
        if algorithm not in _ENCODED_LENGTH:
            raise InvalidDigest(f"unsupported digest algorithm: {algorithm!r}")
        if len(encoded) != _ENCODED_LENGTH[algorithm] or not re.fullmatch(r"[a-f0-9]+", encoded):
            raise InvalidDigest(f"invalid {algorithm} digest: {value!r}")
        return cls(algorithm, encoded)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self):
        """A fresh hash object of this digest's algorithm, for verifying streamed bytes."""
        return hashlib.new(self.algorithm)

    def matches(self, hexdigest: str) -> bool:
        return hexdigest == self.encoded

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.encoded}"


@dataclass(frozen=True, slots=True)
class Tag:
    value: str

    @classmethod
    def parse(cls, value: str) -> Tag:
        if not _TAG.match(value):
            raise InvalidReference(f"invalid tag: {value!r}")
        return cls(value)

    def __str__(self) -> str:
        return self.value


Reference = Tag | Digest


def parse_reference(value: str) -> Reference:
    """A manifest reference is a digest when it contains ':', otherwise a tag."""
    return Digest.parse(value) if ":" in value else Tag.parse(value)

