"""The anchor: DT's documented Flask receiver, what a DT user would otherwise deploy.

Verify ``X-Dt-Signature`` with PyJWT (HS256), compare the SHA-256 body checksum, answer
200. No deduplication, no queue. Served by gunicorn with two sync workers:

    DT_SIGNATURE_SECRET=... gunicorn -w 2 -k sync bench.anchor_flask:app
"""

from __future__ import annotations

import hashlib
import os

import jwt
from flask import Flask, request

app = Flask(__name__)
SECRET = os.environ["DT_SIGNATURE_SECRET"]


@app.route("/", methods=["POST"])
def endpoint():
    token = request.headers.get("X-Dt-Signature")
    if token is None:
        return "Missing signature", 401
    try:
        payload = jwt.decode(token, SECRET, algorithms=["HS256"])
    except jwt.InvalidTokenError:
        return "Invalid signature", 401
    if payload.get("checksum_sha256") != hashlib.sha256(request.data).hexdigest():
        return "Checksum mismatch", 401
    return "OK", 200
