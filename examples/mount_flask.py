"""Mount the DT receiver on /dt in an existing Flask service, on SQLite.

    DT_SIGNATURE_SECRET=... python examples/mount_flask.py
    DT_HANDLERS=handlers dtconnector worker --db .dtconnector/events.db    # the handlers

werkzeug's DispatcherMiddleware hands /dt/... to the receiver's WSGI app. (Django: call
``dt.wsgi()`` from a catch-all view, or mount ``dt.asgi()`` in an ASGI router.) The
handlers run in the worker process; until it runs, events wait in the database.
For Redis (several web processes, a separate worker): ``from heroku.asgi import wsgi_app``.
"""

import atexit

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from local_receiver.app import LocalApp

dt = LocalApp(".dtconnector/events.db")
dt.take_ownership()
atexit.register(dt.stop)

app = Flask(__name__)


@app.get("/")
def home():
    return "my service"


app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/dt": dt.wsgi()})  # type: ignore[method-assign]

if __name__ == "__main__":
    app.run(port=8000)
