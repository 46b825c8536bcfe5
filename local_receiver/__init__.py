"""The local receiver, no cloud needed: core's ports on one SQLite file, a web process
(uvicorn) answering DT and a worker process running the handlers, under one supervisor
(`dtconnector serve`, `serve.py`); `commands.py` holds its `dtconnector` subcommands."""
