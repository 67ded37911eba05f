"""Benchmarks: Entrepôt against the distribution registry in proxy mode (see bench/README.md)."""
