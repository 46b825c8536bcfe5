"""Google Cloud Functions (2nd gen): HTTP `ingest`, Pub/Sub-triggered `process`, Firestore
for dedup claims and device state. Entry points live in `gcp_function.main`."""
