"""Shared fixtures for every test directory; the fixtures themselves live in tests/support/."""

pytest_plugins = ["tests.support.fixtures", "tests.support.postgres", "tests.support.peers"]
