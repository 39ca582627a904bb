"""Benchmarks of the exchange: ``python -m bench [name ...]`` (see ``bench.harness``).

Each benchmark is a module ``bench/<name>.py`` exposing ``run() -> list[Result]``
and registered in :data:`bench.harness.REGISTRY`. Results are printed as tables
and merged into ``bench/results/latest.json``.
"""
