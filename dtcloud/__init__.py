"""The DT Cloud side of the loop: connector management, health, backfill and stream.

Used only by the `dtconnector` CLI (`connector`, `backfill`, `stream`, and `send`, whose
deliveries go through `delivery.py`). DT's REST API is
reached through `client.py` (bounded reads, on `requests`: the `dt` extra, imported lazily);
deliveries to a receiver through `delivery.py` (standard library). Nothing here is imported
by `core/` or by a cloud entry point, and nothing here imports a test double (`emulator`).
"""
