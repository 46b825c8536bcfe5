"""The entry file Code Engine functions and OpenWhisk zip actions look for at the root of
the bundle: ``main(args)`` is the ingest function in the `ibm_action` package."""

from ibm_action.__main__ import main

__all__ = ["main"]
