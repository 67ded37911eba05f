"""The benchmark asks this checkout's settings whether it can run Entrepôt on PostgreSQL."""

from bench.targets import database_url_supported


def test_the_benchmark_sees_that_this_checkout_takes_a_database_url():
    # bench/run skips its PostgreSQL target when this says no; it crashed on the msgspec settings once.
    assert database_url_supported() is True
