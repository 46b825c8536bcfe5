"""Azure Functions: `ingest` (HTTP trigger) and `process` (Storage Queue trigger).

`function_app.py` holds the Python v2 programming model app; `table_store.py` and
`storage_queue.py` implement core's ports on Table Storage and Storage Queues;
`clients.py` reads the configuration and builds the SDK clients (imported lazily, so a
cold start pays only for what the invoked function uses).
"""
