"""Heroku: a web dyno (uvicorn serving an ASGI app) receives DT events, a worker dyno runs
the handlers, and Heroku Key-Value Store (Redis) holds the dedup claims, the work queue and
the latest state per device.

    heroku.web      the web dyno (Procfile: web): `heroku.asgi.app` on `core.serving`'s uvicorn
    heroku.asgi     the ASGI `app` (and `wsgi_app`, to mount in a Flask/Django service)
    heroku.ingest   claim + enqueue as one Redis script, on the asyncio client (group commit)
    heroku.worker   the worker dyno (Procfile: worker), also `--burst` and `--dead-letters`
    heroku.stores   ClaimStore and DeviceStateStore on Redis (SET NX + Lua compare-and-set)
    heroku.queue    the work queue on Redis lists (LMOVE into a per-worker processing list)
    heroku.runtime  builds the Redis clients, Receiver, Worker and ingest once, lazily
"""
