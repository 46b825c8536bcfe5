"""The DT Cloud side of the loop: connector management, health, backfill and stream.

Used only by the `dtconnector` CLI (`connector`, `backfill`, `stream`) through DT's official
client `disruptive` (the `dt` extra), imported lazily in `client.py`. Nothing here is imported
by `core/` or by a cloud entry point.
"""
