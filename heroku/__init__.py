"""Heroku: a web dyno (Flask under gunicorn) receives DT events, a worker dyno runs the
handlers, and Heroku Key-Value Store (Redis) holds the dedup claims, the work queue and
the latest state per device.

    heroku.app      the WSGI `app` (Procfile: web)
    heroku.worker   the worker dyno (Procfile: worker), also `--burst` and `dead-letters`
    heroku.stores   ClaimStore and DeviceStateStore on Redis (SET NX + Lua compare-and-set)
    heroku.queue    the work queue on Redis lists (BLMOVE into a per-worker processing list)
    heroku.runtime  builds the Redis client, Receiver and Worker once per process, lazily
"""
