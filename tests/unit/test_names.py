"""OCI names, tags and digests follow the distribution spec's grammar."""

import pytest

from domain.names import Digest, InvalidDigest, InvalidName, InvalidReference, Tag, parse_reference, repository_name


@pytest.mark.parametrize("name", ["alpine", "library/alpine", "a/b/c/d", "my-app", "my_app", "my__app", "my.app",
                                  "a0/b-1/c.2", "x" * 255])
def test_valid_repository_names_are_accepted(name):
    assert repository_name(name) == name


@pytest.mark.parametrize("name", ["", "Alpine", "-alpine", "alpine-", "a//b", "/a", "a/", "a___b", "a..b", "a b",
                                  "x" * 256, "a/../b"])
def test_invalid_repository_names_are_refused(name):
    with pytest.raises(InvalidName):
        repository_name(name)


@pytest.mark.parametrize("tag", ["latest", "3.19", "v1.0.0-rc1", "_x", "A" * 128])
def test_valid_tags_are_accepted(tag):
    assert Tag.parse(tag).value == tag


@pytest.mark.parametrize("tag", ["-x", ".x", "A" * 129, "a/b", "", "a b"])
def test_invalid_tags_are_refused(tag):
    with pytest.raises(InvalidReference):
        Tag.parse(tag)


def test_a_digest_round_trips_and_verifies_bytes():
    digest = Digest.of(b"hello")
    assert Digest.parse(str(digest)) == digest
    hasher = digest.hasher()
    hasher.update(b"hello")
    assert digest.matches(hasher.hexdigest())


@pytest.mark.parametrize("value", ["sha256:abc", "sha256:" + "G" * 64, "md5:" + "0" * 32, "sha256" + "0" * 64,
                                   "SHA256:" + "0" * 64, "sha512:" + "0" * 64])
def test_malformed_or_unsupported_digests_are_refused(value):
    with pytest.raises(InvalidDigest):
        Digest.parse(value)


def test_a_reference_is_a_digest_when_it_has_a_colon_else_a_tag():
    assert isinstance(parse_reference("sha256:" + "0" * 64), Digest)
    assert isinstance(parse_reference("latest"), Tag)
