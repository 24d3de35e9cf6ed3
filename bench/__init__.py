"""Benchmarks for Quipu, each printed next to a baseline measured in the same run.

Run ``python -m bench.log`` (``--help`` for sizes). Nothing here asserts speed: the figures are
for people, recorded in ``docs/benchmarks.md``.
"""
