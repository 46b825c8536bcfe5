"""Mount the DT receiver on /dt in an existing Starlette (or FastAPI) service, on SQLite.

    DT_SIGNATURE_SECRET=... uvicorn examples.mount_starlette:app
    DT_HANDLERS=handlers dtconnector worker --db .dtconnector/events.db    # the handlers

DT's Data Connector then points at https://your-host/dt/ ; /dt/healthz reports the queue.
Your service only receives (verifies, deduplicates, stores): the handlers run in the
worker process, so a slow handler never holds up your service or DT's answers. Until the
worker runs, events wait in the database.
For Redis (several web processes, a separate worker): ``from heroku.asgi import app as dt``.
"""

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from local_receiver.app import LocalApp

dt = LocalApp(".dtconnector/events.db")


@asynccontextmanager
async def lifespan(app):
    dt.take_ownership()  # one web process on the SQLite file
    yield
    dt.stop()


async def home(request):
    return PlainTextResponse("my service")


app = Starlette(routes=[Route("/", home), Mount("/dt", app=dt.asgi())], lifespan=lifespan)
