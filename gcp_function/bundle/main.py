"""Cloud Functions loads `main.py` from the root of the deployed source: this shim only
re-exports the entry points (--entry-point=ingest / --entry-point=process)."""

from gcp_function.main import ingest, process

__all__ = ["ingest", "process"]
