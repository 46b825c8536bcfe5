"""The local receiver: core on SQLite behind a small HTTP server, no cloud needed."""
