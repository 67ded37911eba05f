"""The pull decision (domain/access.py), robot token hashes (domain/robot.py) and pull tokens (infra/tokens.py)."""

from __future__ import annotations

import jwt
import pytest

from domain.access import (ANONYMOUS_PRINCIPAL, InvalidAccount, Principal, Role, Verdict, check_patterns,
                           check_robot_name, may_pull, split_username)
from domain.robot import hash_token, new_token, token_matches
from infra.tokens import JwtTokens, signing_key
from tests.support.clock import ManualClock

CI = Principal("private+ci", Role.ROBOT, "private", ("library/*", "bitnami/redis"))
LEAD = Principal("private+lead", Role.ORG_ADMIN, "private", ("*",))


@pytest.mark.parametrize("principal, org, repository, anonymous_pull, verdict", [
    (ANONYMOUS_PRINCIPAL, "hub", "library/alpine", True, Verdict.ALLOW),
    (ANONYMOUS_PRINCIPAL, "private", "library/alpine", False, Verdict.CHALLENGE),
    (CI, "private", "library/alpine", False, Verdict.ALLOW),
    (CI, "private", "library/a/b", False, Verdict.ALLOW),          # `*` crosses `/`
    (CI, "private", "bitnami/redis", False, Verdict.ALLOW),
    (CI, "private", "bitnami/redis-cluster", False, Verdict.DENY),
    (CI, "other", "library/alpine", False, Verdict.DENY),           # robots belong to one org
    (CI, "hub", "anything/else", True, Verdict.ALLOW),              # an open org is open to everyone
    (LEAD, "private", "any/thing", False, Verdict.ALLOW),
    (LEAD, "other", "any/thing", False, Verdict.DENY),
    (Principal("admin", Role.ADMIN), "private", "x", False, Verdict.ALLOW),
])
def test_who_may_pull_what(principal, org, repository, anonymous_pull, verdict):
    assert may_pull(principal, org, repository, anonymous_pull).verdict is verdict


def test_a_token_grants_exactly_its_repositories_in_a_protected_org():
    holder = Principal("private+ci", Role.ROBOT, "private", grants=frozenset({"private/library/alpine"}))
    assert may_pull(holder, "private", "library/alpine", False).allowed
    refused = may_pull(holder, "private", "library/busybox", False)
    assert refused.verdict is Verdict.INSUFFICIENT_SCOPE and "private/library/busybox" in refused.reason
    assert may_pull(holder, "hub", "library/busybox", True).allowed


@pytest.mark.parametrize("name", ["", "A", "-x", "x-", "a b", "x" * 65, "a/b", "a+b"])
def test_robot_names_are_refused_unless_lower_case_words(name):
    with pytest.raises(InvalidAccount):
        check_robot_name(name)


@pytest.mark.parametrize("pattern", ["", "../x", "/abs", "Library/*", "a//b", "a b", "x" * 256])
def test_bad_repository_patterns_are_refused(pattern):
    with pytest.raises(InvalidAccount):
        check_patterns([pattern])


def test_patterns_are_deduplicated_in_order_and_usernames_split():
    assert check_patterns(["library/*", "*", "library/*", "bitnami/redis"]) == ("library/*", "*", "bitnami/redis")
    assert split_username("private+ci") == ("private", "ci")
    for username in ("private", "+ci", "private+", "private+CI"):
        with pytest.raises(InvalidAccount):
            split_username(username)


def test_a_token_hash_is_salted_and_slow_and_matches_only_its_token():
    token = "t0ken-value"
    stored, again = hash_token(token, n=2**10), hash_token(token, n=2**10)
    assert stored != again and token not in stored
    assert stored.startswith("scrypt$1024$8$1$")
    assert token_matches(token, stored) and token_matches(token, again)
    assert not token_matches(token + "x", stored)
    assert not token_matches(token, "garbage") and not token_matches(token, "")


def test_pull_tokens_verify_on_every_replica_sharing_the_secret_and_expire_by_the_clock():
    clock = ManualClock()
    issuer, replica, stranger = JwtTokens("shared", clock), JwtTokens("shared", clock), JwtTokens("other", clock)
    issued = issuer.issue("private+ci", "robot", "private", ["private/library/alpine"])
    claims = jwt.decode(issued.token, signing_key("shared"), algorithms=["HS256"], audience="entrepot")
    assert claims["access"] == [{"type": "repository", "name": "private/library/alpine", "actions": ["pull"]}]
    assert claims["exp"] - claims["iat"] == issued.expires_in == 300
    principal = replica.verify(issued.token)
    assert principal == Principal("private+ci", Role.ROBOT, "private", grants=frozenset({"private/library/alpine"}))
    assert stranger.verify(issued.token) is None
    assert replica.verify(issued.token + "x") is None
    none_alg = jwt.encode({**claims}, key=None, algorithm="none")
    assert replica.verify(none_alg) is None
    clock.advance(301 + 10)
    assert replica.verify(issued.token) is None   # also once cached: the cache keeps the expiry


def test_a_new_token_never_starts_with_a_dash_which_a_command_line_would_read_as_an_option(monkeypatch):
    drawn = iter(["-starts-with-dash", "--two", "fine-token"])
    monkeypatch.setattr("domain.robot.secrets.token_urlsafe", lambda n: next(drawn))
    assert new_token() == "fine-token"
