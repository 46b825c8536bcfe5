"""IBM Cloud: a Code Engine function (or OpenWhisk web action) for ingest, Cloudant for the
dedup record, the outbox, the worker's ledger and device state, and a Code Engine job that
follows the database's changes feed.

Nothing here imports the Cloudant SDK at import time: `ibm_action.cloudant` loads it when
the first client is built.
"""
