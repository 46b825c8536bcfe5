"""Reliability figures for dtconnector: fault injection, load and hostile-input checks.

`python -m reliability` runs the full-size load scenarios and writes RELIABILITY.md;
tests/reliability/ runs scaled-down versions of the same checks on every platform.
"""
